#!/usr/bin/env bash
# Per-service Kafka ACLs for paystream (docs/security.md, "Kafka ACLs").
# Least privilege: each service gets only the operations its role needs; the
# brokers run with allow.everyone.if.no.acl.found=false, so anything not granted
# here is denied. tests/unit/deploy/test_kafka_acls.py fails on a topic, consumer
# group or transactional id of the code (streams/topics.py) that no grant covers.
#
#   BOOTSTRAP=broker-1:9093 COMMAND_CONFIG=admin.properties ./acls.sh
#   DRY_RUN=1 ./acls.sh            # print the kafka-acls.sh calls instead
#
# NAMESPACE (PAYSTREAM_NAMESPACE) prefixes the pipeline topics with "<ns>." and
# makes the app id "paystream-<ns>", exactly as streams/topics.py and settings do.
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-localhost:9093}"
COMMAND_CONFIG="${COMMAND_CONFIG:-admin.properties}"
KAFKA_ACLS="${KAFKA_ACLS:-kafka-acls.sh}"
NAMESPACE="${NAMESPACE:-}"
DRY_RUN="${DRY_RUN:-0}"

if [[ -n "$NAMESPACE" && ! "$NAMESPACE" =~ ^[a-z0-9-]{1,32}$ ]]; then
  echo "NAMESPACE must match [a-z0-9-]{1,32}" >&2
  exit 2
fi
prefix="${NAMESPACE:+$NAMESPACE.}"
app_id="paystream${NAMESPACE:+-$NAMESPACE}"

# The topics of streams/topics.py (topic_names).
commands="${prefix}payment-commands"
validated="${prefix}payment-commands-validated"
outcomes="${prefix}payment-outcomes"
dlq="${prefix}payment-dlq"
events="${prefix}payment-events"
ledger="${prefix}ledger-entries"
risk="${prefix}payment-commands-risk"
labels="${prefix}fraud-labels"
review="${prefix}fraud-review"
blocklist="${prefix}fraud-blocklist"
merchants="${prefix}merchants"
fx_rates="${prefix}fx-rates"
payouts="${prefix}payouts"
webhooks="${prefix}webhook-deliveries"
merchant_labels="${prefix}fraud-labels-merchant"
subscription_commands="${prefix}subscription-commands"
clock="${prefix}clock"
job_runs="${prefix}job-runs"
sanctions="${prefix}sanctions-list"
api_objects="${prefix}api-objects"
monitoring_activity="${prefix}monitoring-activity"
monitoring_cases="${prefix}monitoring-cases"
monitoring_decisions="${prefix}monitoring-decisions"
card_vault="${prefix}card-vault"
vault_reveals="${prefix}vault-reveals"
# The Schema Registry's own storage (Apicurio's kafkasql journal, deploy/docker-compose.yml).
registry_journal="${REGISTRY_TOPIC:-kafkasql-journal}"

# The consumer groups and transactional ids of streams/topics.py (client_ids). Groups
# ending in "-" are prefixes: the readers add a random suffix and never commit.
worker_group="$app_id"
worker_transactions="${app_id}-"
sink_group="${app_id}-sink"
rebuild_groups="${app_id}-rebuild-"
webhooks_group="${app_id}-webhooks"
settle_transaction="${app_id}-settle"
payouts_transaction="${app_id}-payouts"
reader_groups="paystream-reader-"
snapshot_groups="paystream-snapshot-"
console_groups="paystream-console-"
sizer_group="paystream-sizer"

# Principals: one per service (SCRAM user name, or the CN of its mTLS certificate).
PRODUCER="${PRODUCER_PRINCIPAL:-User:producer}"       # merchants' gateways outside the API, inside the PCI zone
WORKER="${WORKER_PRINCIPAL:-User:paystream-worker}"   # the worker: every stage
SINK="${SINK_PRINCIPAL:-User:clickhouse-sink}"        # read models for analysts
API="${API_PRINCIPAL:-User:paystream-api}"            # the merchant API and the dashboard
WEBHOOKS="${WEBHOOKS_PRINCIPAL:-User:paystream-webhooks}"     # the webhook runner
SCHEDULER="${SCHEDULER_PRINCIPAL:-User:paystream-scheduler}"  # clock ticks and the daily jobs
OPS="${OPS_PRINCIPAL:-User:ops}"                      # audit, outcome readers, DLQ triage
OPERATOR="${OPERATOR_PRINCIPAL:-User:operator}"       # the CLI's writes: reference data and decisions
REGISTRY="${REGISTRY_PRINCIPAL:-User:schema-registry}"  # the Schema Registry's storage

acl() {  # acl <principal> <operation> <resource flag> <name> [prefixed]
  local args=(--bootstrap-server "$BOOTSTRAP" --command-config "$COMMAND_CONFIG" --add
              --allow-principal "$1" --operation "$2" "$3" "$4")
  if [[ "${5:-}" == prefixed ]]; then args+=(--resource-pattern-type prefixed); fi
  if [[ "$DRY_RUN" == 1 ]]; then echo "$KAFKA_ACLS ${args[*]}"; else "$KAFKA_ACLS" "${args[@]}"; fi
}
reads() {  # reads <principal> <topic>...
  local who="$1" t; shift
  for t in "$@"; do acl "$who" Read --topic "$t"; acl "$who" Describe --topic "$t"; done
}
writes() {  # writes <principal> <topic>... (idempotent producers need only Write since Kafka 3)
  local who="$1" t; shift
  for t in "$@"; do acl "$who" Write --topic "$t"; acl "$who" Describe --topic "$t"; done
}
groups() {  # groups <principal> <group>...: a name ending in "-" is granted as a prefix
  local who="$1" g; shift
  for g in "$@"; do
    if [[ "$g" == *- ]]; then acl "$who" Read --group "$g" prefixed; else acl "$who" Read --group "$g"; fi
  done
}
transactions() {  # transactions <principal> <transactional id>...: a name ending in "-" is a prefix
  local who="$1" id pattern; shift
  for id in "$@"; do
    pattern=""; [[ "$id" == *- ]] && pattern=prefixed
    acl "$who" Write --transactional-id "$id" $pattern
    acl "$who" Describe --transactional-id "$id" $pattern
  done
}

# Producers write commands, and nothing else.
writes "$PRODUCER" "$commands"

# The worker: the stages of streams/worker/topology.py. Each reads its source and writes
# its outputs (the subscriptions stage publishes the charges it is due as commands);
# every worker follows the blocklist, the sanctions list and the vault whole, outside
# the group; the tables live in one changelog topic "<app id>-tables-changelog" (the
# per-table "<app id>-<table>-changelog" of before are read by `paystream topics
# migrate-changelogs`, run with the worker's credentials: its prefix grants cover them
# and its transactional id "<app id>-migrate-changelogs").
# Exactly-once needs its group (the app id) and transactional ids "<app id>-<worker>".
reads "$WORKER" "$commands" "$merchant_labels" "$validated" "$ledger" "$risk" "$labels" \
  "$merchants" "$clock" "$outcomes" "$subscription_commands" "$monitoring_activity" \
  "$blocklist" "$sanctions" "$card_vault"
writes "$WORKER" "$card_vault" "$risk" "$validated" "$review" "$outcomes" "$events" "$labels" \
  "$ledger" "$monitoring_activity" "$vault_reveals" "$merchant_labels" "$subscription_commands" \
  "$commands" "$monitoring_cases" "$dlq"
for op in Read Write Describe; do
  acl "$WORKER" "$op" --topic "${app_id}-" prefixed
done
groups "$WORKER" "$worker_group" "$reader_groups" "$snapshot_groups"
transactions "$WORKER" "$worker_transactions"

# Analysts' sink: events, outcomes and the books; never commands (raw cards before
# ingest). What it cannot decode becomes a dead letter.
reads "$SINK" "$events" "$outcomes" "$ledger"
writes "$SINK" "$dlq"
groups "$SINK" "$sink_group" "$rebuild_groups"

# The merchant API: publishes commands and reads their outcomes; its Customers and saved
# PaymentMethods (api-objects); Accounts and KYC on the merchant registry (screened
# against the sanctions list); the dashboard's reviews, webhook retries, event windows,
# the case queue, dead letters and the lag of the worker's and the sink's groups.
writes "$API" "$commands" "$validated" "$webhooks" "$api_objects" "$merchants" "$monitoring_decisions"
reads "$API" "$outcomes" "$events" "$review" "$webhooks" "$api_objects" "$merchants" "$sanctions" \
  "$monitoring_cases" "$monitoring_decisions" "$dlq"
groups "$API" "$reader_groups" "$snapshot_groups" "$console_groups"
acl "$API" Describe --group "$worker_group"
acl "$API" Describe --group "$sink_group"

# The webhook runner: every payment event, each attempt recorded on webhook-deliveries.
reads "$WEBHOOKS" "$events"
writes "$WEBHOOKS" "$webhooks"
groups "$WEBHOOKS" "$webhooks_group"

# The scheduler: clock ticks, its runs on job-runs, and the daily jobs it runs: settle
# (the books and rates in, entries and payouts out), payouts, the KYC re-verification
# (the registry against the sanctions list).
reads "$SCHEDULER" "$job_runs" "$ledger" "$fx_rates" "$merchants" "$sanctions" "$payouts"
writes "$SCHEDULER" "$clock" "$job_runs" "$ledger" "$payouts" "$merchants"
groups "$SCHEDULER" "$snapshot_groups"
transactions "$SCHEDULER" "$settle_transaction" "$payouts_transaction"

# Ops: read what the pipeline produced (audit, outcomes, dead letters, masked; the reveal
# audit) and the worker's committed offsets; write nothing.
reads "$OPS" "$events" "$outcomes" "$dlq" "$vault_reveals" "$ledger"
groups "$OPS" "$reader_groups" "$snapshot_groups" "$sizer_group"
acl "$OPS" Describe --group "$worker_group"

# The operator's CLI: the reference data the pipeline reads (merchants, the blocklist,
# the sanctions list, FX rates), fraud review and case decisions, subscriptions, and a
# manual clock tick; it reads what those commands show. `paystream keys rewrap`
# republishes sealed cards: run it with the worker's credentials (card-vault is the
# worker's alone). `paystream subscriptions list` reads the subscriptions table out of
# the tables' changelog, which holds every table's state (tokens, never card numbers).
writes "$OPERATOR" "$merchants" "$blocklist" "$sanctions" "$fx_rates" "$validated" "$monitoring_decisions" \
  "$subscription_commands" "$clock"
reads "$OPERATOR" "$merchants" "$blocklist" "$sanctions" "$fx_rates" "$labels" "$review" "$monitoring_cases" \
  "$monitoring_decisions" "${app_id}-tables-changelog"
groups "$OPERATOR" "$reader_groups" "$snapshot_groups"

# The Schema Registry keeps its schemas in its journal topic (created at its first start,
# compacted); each replica reads it whole in a group of its own (a random name).
for op in Read Write Describe Create; do
  acl "$REGISTRY" "$op" --topic "$registry_journal"
done
acl "$REGISTRY" Read --group "*"
