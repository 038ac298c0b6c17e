#!/usr/bin/env bash
# Per-service Kafka ACLs for paystream (docs/security.md, "Kafka ACLs").
# Least privilege: each service gets only the operations its role needs; the
# brokers run with allow.everyone.if.no.acl.found=false, so anything not granted
# here is denied.
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

commands="${prefix}payment-commands"
validated="${prefix}payment-commands-validated"
outcomes="${prefix}payment-outcomes"
events="${prefix}payment-events"
dlq="${prefix}payment-dlq"
card_vault="${prefix}card-vault"
vault_reveals="${prefix}vault-reveals"

# Principals: one per service (SCRAM user name, or the CN of its mTLS certificate).
PRODUCER="${PRODUCER_PRINCIPAL:-User:producer}"   # merchant API gateway, inside the PCI zone
WORKER="${WORKER_PRINCIPAL:-User:paystream-worker}" # the worker: every stage
SINK="${SINK_PRINCIPAL:-User:clickhouse-sink}"      # read models for analysts
OPS="${OPS_PRINCIPAL:-User:ops}"                    # audit, outcome readers, DLQ triage

acl() {  # acl <principal> <operation> <resource flag> <name> [prefixed]
  local args=(--bootstrap-server "$BOOTSTRAP" --command-config "$COMMAND_CONFIG" --add
              --allow-principal "$1" --operation "$2" "$3" "$4")
  if [[ "${5:-}" == prefixed ]]; then args+=(--resource-pattern-type prefixed); fi
  if [[ "$DRY_RUN" == 1 ]]; then echo "$KAFKA_ACLS ${args[*]}"; else "$KAFKA_ACLS" "${args[@]}"; fi
}

# Producers write commands, and nothing else (idempotent producers need only Write since Kafka 3).
acl "$PRODUCER" Write    --topic "$commands"
acl "$PRODUCER" Describe --topic "$commands"

# The worker: ingest reads commands and writes tokenized commands and dead letters;
# payments reads tokenized commands and writes outcomes and events; both keep their
# tables in changelog topics "<app id>-<table>-changelog". Exactly-once needs its
# transactional ids ("<app id>-...") and its consumer group (the app id).
for t in "$commands" "$validated"; do
  acl "$WORKER" Read     --topic "$t"
  acl "$WORKER" Describe --topic "$t"
done
for t in "$validated" "$outcomes" "$events" "$dlq"; do
  acl "$WORKER" Write    --topic "$t"
  acl "$WORKER" Describe --topic "$t"
done
for op in Read Write Describe; do
  acl "$WORKER" "$op" --topic "${app_id}-" prefixed
done
# The vault (docs/security.md): ingest seals cards onto card-vault, every worker reads it
# whole; the payments stage writes the audit of each reveal.
for op in Read Write Describe; do
  acl "$WORKER" "$op" --topic "$card_vault"
done
acl "$WORKER" Write    --topic "$vault_reveals"
acl "$WORKER" Describe --topic "$vault_reveals"
acl "$WORKER" Read     --group "$app_id"
acl "$WORKER" Write    --transactional-id "${app_id}-" prefixed
acl "$WORKER" Describe --transactional-id "${app_id}-" prefixed

# Analysts' sink: events and outcomes only; never commands (raw cards before ingest).
for t in "$events" "$outcomes"; do
  acl "$SINK" Read     --topic "$t"
  acl "$SINK" Describe --topic "$t"
done
acl "$SINK" Read --group "paystream-sink" prefixed

# Ops: read what the pipeline produced (audit, outcomes, dead letters, masked; the reveal audit).
for t in "$events" "$outcomes" "$dlq" "$vault_reveals"; do
  acl "$OPS" Read     --topic "$t"
  acl "$OPS" Describe --topic "$t"
done
acl "$OPS" Read --group "paystream-reader-" prefixed
acl "$OPS" Read --group "paystream-audit" prefixed
