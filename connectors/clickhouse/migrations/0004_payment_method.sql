-- The payment's method (card, wallet, bank_transfer, bnpl, crypto), for the console's
-- filter (streams/api/console.py). Events before PaymentEvent version 3 carry none: a card.
ALTER TABLE payments ADD COLUMN IF NOT EXISTS method LowCardinality(String) DEFAULT 'card';
ALTER TABLE payment_events ADD COLUMN IF NOT EXISTS method LowCardinality(String) DEFAULT 'card';
