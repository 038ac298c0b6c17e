"""The pipeline: its stages, the runtime they run on, the jobs and the `paystream` CLI."""
