-- A merchant is paid in its settlement currency (streams/settlement.py): what it
-- received, the FX rate used, and why a day owed money but paid nothing.
ALTER TABLE settlements ADD COLUMN IF NOT EXISTS paid_currency LowCardinality(String) DEFAULT currency;
ALTER TABLE settlements ADD COLUMN IF NOT EXISTS paid_minor Int64 DEFAULT payout_minor;
ALTER TABLE settlements ADD COLUMN IF NOT EXISTS fx_rate String DEFAULT '';
ALTER TABLE settlements ADD COLUMN IF NOT EXISTS refused LowCardinality(String) DEFAULT '';
