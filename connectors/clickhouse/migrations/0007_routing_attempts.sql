-- A payment's routing attempts (PaymentEvent v5 `attempts`), on the event that decides its
-- authorization (authorized, declined, authorization_pending) when the router made more
-- than one call: a failover, or a soft decline retried once at another acquirer. One
-- element per provider call, in call order; reason_code '' when approved. Every other
-- event, and an authorization decided by one call, has none (that call is the event's
-- provider and outcome). Approval by attempt: docs/analytics.md.
ALTER TABLE payment_events ADD COLUMN IF NOT EXISTS attempts Nested(provider LowCardinality(String), status LowCardinality(String), reason_code String, retryable Bool);
