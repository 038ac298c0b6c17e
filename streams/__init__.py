"""The Faust app, its stages and the `paystream` CLI."""
