"""Measuring and breaking the pipeline: bench, chaos, recovery."""
