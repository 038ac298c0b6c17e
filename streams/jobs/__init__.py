"""Side processes over the topics: the ClickHouse sink, webhooks, settle, payouts, the scheduler."""
