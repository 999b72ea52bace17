"""Scoring masks against the truth: smp's metrics with every reduction, per-patient 3D Dice, evaluate and score."""
