-- The asset side of a crypto payment's events (PaymentEvent v4 `crypto`): the asset,
-- what the event moved in its minor units, the quote's due amount and lock window,
-- the address (deposit address; the payer's for coins sent back) and the chain's
-- transactions. Reconciliation against the chain reads the quotes and the sends from
-- here (streams/jobs/sink.py `custody_day`). Other events: empty, 0, no time.
ALTER TABLE payment_events ADD COLUMN IF NOT EXISTS asset LowCardinality(String) DEFAULT '';
ALTER TABLE payment_events ADD COLUMN IF NOT EXISTS asset_amount_minor Int64 DEFAULT 0;
ALTER TABLE payment_events ADD COLUMN IF NOT EXISTS asset_due_minor Int64 DEFAULT 0;
ALTER TABLE payment_events ADD COLUMN IF NOT EXISTS crypto_address String DEFAULT '';
ALTER TABLE payment_events ADD COLUMN IF NOT EXISTS crypto_tx_ids Array(String);
ALTER TABLE payment_events ADD COLUMN IF NOT EXISTS quote_expires_at Nullable(DateTime64(3, 'UTC'));
-- The asset a crypto payment is paid in, on its latest state ('' for every other method).
ALTER TABLE payments ADD COLUMN IF NOT EXISTS asset LowCardinality(String) DEFAULT '';
