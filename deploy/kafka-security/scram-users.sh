#!/usr/bin/env bash
# Create (or reset) the SCRAM-SHA-512 credentials of the paystream service users.
# Each password is read from $SECRETS_DIR/<user>.password (one line, 0600 or 0400).
# kafka-configs.sh takes the password as an argument, so it shows in this host's
# process list while it runs: run this from an admin host, not a shared one.
#
#   BOOTSTRAP=broker-1:9093 COMMAND_CONFIG=admin.properties SECRETS_DIR=/etc/paystream/scram ./scram-users.sh
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-localhost:9093}"
COMMAND_CONFIG="${COMMAND_CONFIG:-admin.properties}"
KAFKA_CONFIGS="${KAFKA_CONFIGS:-kafka-configs.sh}"
SECRETS_DIR="${SECRETS_DIR:?set SECRETS_DIR to the directory of <user>.password files}"
USERS=(${USERS:-producer paystream-worker clickhouse-sink ops})

for user in "${USERS[@]}"; do
  file="$SECRETS_DIR/$user.password"
  if [[ ! -f "$file" ]]; then echo "missing $file" >&2; exit 2; fi
  if [[ "$(stat -c %a "$file")" != 600 && "$(stat -c %a "$file")" != 400 ]]; then
    echo "$file must be 0600 or 0400" >&2; exit 2
  fi
  password="$(head -n1 "$file")"
  if (( ${#password} < 24 )); then echo "$file: use a password of at least 24 characters" >&2; exit 2; fi
  "$KAFKA_CONFIGS" --bootstrap-server "$BOOTSTRAP" --command-config "$COMMAND_CONFIG" --alter \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$password]" --entity-type users --entity-name "$user" >/dev/null
  echo "scram: $user set"
done
