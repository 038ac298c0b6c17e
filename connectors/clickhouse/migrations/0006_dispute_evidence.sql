-- The evidence text an accepted dispute_evidence submitted (PaymentOutcome v2), for the
-- console's disputes: the payment's state drops it when the dispute closes.
ALTER TABLE payment_outcomes ADD COLUMN IF NOT EXISTS dispute_evidence Nullable(String);
