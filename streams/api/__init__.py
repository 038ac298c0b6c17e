"""The merchant HTTP API: a Stripe-like front door on the command stream (docs/api.md)."""
