-- Read models of the payment pipeline. Every table is a ReplacingMergeTree whose
-- sorting key is a function of the source record's id (event id, entry id + line,
-- outcome id, ...): a replayed or re-delivered record lands on the same key and
-- collapses into one row at merge time; queries that must count exactly read FINAL.
-- No PAN anywhere: a card is its token, BIN and last four digits.
-- non_replicated_deduplication_window lets the sink's insert_deduplication_token
-- drop a retried identical batch at insert time, before any merge.

-- Latest state per payment: the row with the highest version wins.
CREATE TABLE IF NOT EXISTS payments
(
    payment_id       String,
    merchant_id      LowCardinality(String),
    currency         LowCardinality(String),
    status           LowCardinality(String),
    authorized_minor Int64,
    captured_minor   Int64,
    refunded_minor   Int64,
    version          UInt64,
    last_event_id    String,
    last_event_type  LowCardinality(String),
    reason_code      Nullable(String),
    provider         Nullable(String),
    card_token       Nullable(String),
    card_bin         Nullable(String),
    card_last4       Nullable(String),
    updated_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY payment_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Every payment event (the signature and chain hash stay in Kafka, the audit's source).
CREATE TABLE IF NOT EXISTS payment_events
(
    event_id         String,
    type             LowCardinality(String),
    payment_id       String,
    merchant_id      LowCardinality(String),
    command_id       Nullable(String),
    currency         LowCardinality(String),
    amount_minor     Int64,
    fee_minor        Int64,
    payment_status   LowCardinality(String),
    authorized_minor Int64,
    captured_minor   Int64,
    refunded_minor   Int64,
    version          UInt64,
    provider         Nullable(String),
    provider_ref     Nullable(String),
    reason_code      Nullable(String),
    card_token       Nullable(String),
    card_bin         Nullable(String),
    card_last4       Nullable(String),
    chain_seq        UInt64,
    occurred_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (merchant_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per journal line (an entry is its lines sharing entry_id).
CREATE TABLE IF NOT EXISTS ledger_entries
(
    entry_id     String,
    line_no      UInt16,
    event_id     String,
    event_type   LowCardinality(String),
    payment_id   String,
    merchant_id  LowCardinality(String),
    shard        UInt32,
    account      LowCardinality(String),
    currency     LowCardinality(String),
    debit_minor  Int64,
    credit_minor Int64,
    reverses     Nullable(String),
    fx_rate      Nullable(String),
    occurred_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (account, currency, occurred_at, entry_id, line_no)
SETTINGS non_replicated_deduplication_window = 1000;

-- Balances per account and currency, debit positive (docs/ledger.md). A view over
-- the deduplicated lines, not a SummingMergeTree: a summing table would add a
-- re-delivered line twice before Replacing could drop it.
CREATE VIEW IF NOT EXISTS balances AS
SELECT
    account,
    currency,
    sum(debit_minor) - sum(credit_minor) AS balance_minor,
    count() AS lines,
    max(occurred_at) AS as_of
FROM ledger_entries FINAL
GROUP BY account, currency;

-- The fraud decision of each payment, read from its first event (version 1):
-- declined with reason fraud_suspected is a decline, anything else an approval.
CREATE TABLE IF NOT EXISTS fraud_decisions
(
    payment_id  String,
    merchant_id LowCardinality(String),
    currency    LowCardinality(String),
    action      LowCardinality(String),
    reason_code Nullable(String),
    event_id    String,
    event_type  LowCardinality(String),
    card_token  Nullable(String),
    card_bin    Nullable(String),
    occurred_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY payment_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Dispute events: opened (funds taken back), won (returned), lost (stays taken).
CREATE TABLE IF NOT EXISTS disputes
(
    event_id     String,
    payment_id   String,
    merchant_id  LowCardinality(String),
    stage        LowCardinality(String),
    currency     LowCardinality(String),
    amount_minor Int64,
    reason_code  Nullable(String),
    occurred_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (merchant_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Command outcomes (validation rejections only exist here, not as payment events).
CREATE TABLE IF NOT EXISTS payment_outcomes
(
    outcome_id       String,
    command_id       String,
    kind             LowCardinality(String),
    merchant_id      LowCardinality(String),
    idempotency_key  String,
    payment_id       Nullable(String),
    status           LowCardinality(String),
    reason_code      Nullable(String),
    reason_detail    Nullable(String),
    payment_status   Nullable(String),
    amount_minor     Nullable(Int64),
    currency         Nullable(String),
    authorized_minor Int64,
    captured_minor   Int64,
    refunded_minor   Int64,
    card_bin         Nullable(String),
    card_last4       Nullable(String),
    occurred_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (merchant_id, occurred_at, outcome_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Daily settlement per merchant and currency (streams/settlement.py).
CREATE TABLE IF NOT EXISTS settlements
(
    settlement_id     String,
    day               Date,
    merchant_id       LowCardinality(String),
    currency          LowCardinality(String),
    captured_minor    Int64,
    refunded_minor    Int64,
    disputed_minor    Int64,
    dispute_won_minor Int64,
    fees_minor        Int64,
    other_minor       Int64,
    net_minor         Int64,
    carried_in_minor  Int64,
    payout_minor      Int64,
    entry_id          Nullable(String),
    payout_id         Nullable(String),
    cutoff_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (day, merchant_id, currency)
SETTINGS non_replicated_deduplication_window = 1000;

-- Provider report vs ledger, one row per provider transaction (streams/reconcile.py).
-- A re-run of a day replaces its rows key by key.
CREATE TABLE IF NOT EXISTS reconciliation
(
    day                 Date,
    provider            LowCardinality(String),
    provider_ref        String,
    payment_id          String,
    status              LowCardinality(String),
    currency            LowCardinality(String),
    report_amount_minor Nullable(Int64),
    ledger_amount_minor Nullable(Int64),
    report_fee_minor    Nullable(Int64),
    ledger_fee_minor    Nullable(Int64),
    detail              String
)
ENGINE = ReplacingMergeTree
ORDER BY (day, provider, provider_ref)
SETTINGS non_replicated_deduplication_window = 1000;
