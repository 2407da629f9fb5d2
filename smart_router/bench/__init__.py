"""Load benchmarks that print their figures: `smart-router bench --mode ...`."""
