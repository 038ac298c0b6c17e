"""The demo: realistic traffic through a real broker and worker, summarised."""
