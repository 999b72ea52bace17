"""Slices, masks, volumes and series in; prepared, patient-split CSVs out. Imports only ``core``."""
