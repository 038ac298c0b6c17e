"""The embedded Kafka broker launcher and topic administration (no `streams` imports)."""
