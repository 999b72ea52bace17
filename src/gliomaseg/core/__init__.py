"""The bottom layer: errors, file writing and naming rules, defaults, limits, units, the machine. Imports no other gliomaseg layer."""
