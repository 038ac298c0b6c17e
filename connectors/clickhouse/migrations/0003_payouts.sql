-- Payouts on the bank rail (streams/payouts.py, `paystream payouts run`): one row per
-- payout, its latest status (sent, then paid or failed with the bank's reason). A
-- re-run writes the same rows; the answer's row replaces the send's (version 2 > 1).
CREATE TABLE IF NOT EXISTS payouts
(
    payout_id      String,
    settlement_id  String,
    merchant_id    LowCardinality(String),
    currency       LowCardinality(String),
    amount_minor   Int64,
    day            Date,
    status         LowCardinality(String),
    sent_at        DateTime64(3, 'UTC'),
    answered_at    Nullable(DateTime64(3, 'UTC')),
    failure_reason LowCardinality(String),
    version        UInt8
)
ENGINE = ReplacingMergeTree(version)
ORDER BY payout_id
SETTINGS non_replicated_deduplication_window = 1000;
