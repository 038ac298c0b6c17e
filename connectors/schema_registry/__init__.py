"""The embedded Schema Registry launcher (no `streams` imports)."""
