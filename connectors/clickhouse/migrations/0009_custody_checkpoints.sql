-- Crypto custody checkpoints (streams/jobs/sink.py `custody_day`): per asset, what the
-- chain shows for the quotes whose watch had ended by `cutoff_ms` less our sends by then,
-- and the ledger's custody balance by then. A custody check starts from the latest one
-- old enough, so it reads the quotes still watched and what happened since, not all
-- history. asset '' marks a checkpoint with no asset yet. Derived from payment_events
-- and ledger_entries: a rebuild drops it with them.
CREATE TABLE IF NOT EXISTS custody_checkpoints
(
    cutoff_ms           Int64,
    asset               LowCardinality(String),
    chain_settled_minor Int64,
    ledger_minor        Int64
)
ENGINE = ReplacingMergeTree
ORDER BY (cutoff_ms, asset);
