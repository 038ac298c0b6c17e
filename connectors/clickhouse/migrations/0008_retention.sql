-- Retention of personal data in the read models (docs/compliance.md, "Retention"): a fraud
-- decision names the card token and, for a payment held by sanctions screening, the hit
-- (`sanctions_hit:<uid>:<score>`); it is kept five years from the payment's event time, as
-- the AML records are, then deleted at a merge. A rebuild from payment-events inserts
-- older rows again and the next merge drops them. Applying this rewrites the table's
-- parts once (the TTL is materialised on the rows already there).
ALTER TABLE fraud_decisions MODIFY TTL toDateTime(occurred_at) + INTERVAL 5 YEAR;
