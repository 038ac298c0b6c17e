"""The edges of the pipeline: Kafka launcher/admin, providers, ClickHouse sink, webhooks."""
