"""The declared topology on the runtime, and what a worker process watches."""
