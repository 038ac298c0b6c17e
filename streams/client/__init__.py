"""Publishing to and reading from the topics, shared by the CLI, API, demo and harness."""
