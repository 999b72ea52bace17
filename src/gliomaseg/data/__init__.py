"""Data: reading and validating slices, the synthetic generator, prepare (CSV + split), the Dataset."""
