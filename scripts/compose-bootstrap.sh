#!/bin/sh
# The operator bootstrap of a deployment on PostgreSQL, S3 and AWS KMS, once
# the bucket and the tenant's KMS key exist: the audit signing key, the
# tenant, its first tokens. docker-compose.yml's `bootstrap` job runs it in
# the callvault image; scripts/compose-topology.sh runs it on the host with
# the same variables, so CI runs what `docker compose up` runs.
#
#   scripts/compose-bootstrap.sh [CALLVAULT_BINARY]      (default: callvault)
#
# Environment: the nodes' own CALLVAULT_DATABASE_URL, CALLVAULT_STORE,
# CALLVAULT_STORE_ENDPOINT, CALLVAULT_KMS, CALLVAULT_KMS_ENDPOINT,
# CALLVAULT_REGION, CALLVAULT_AUDIT_SIGNING_KEY and AWS credentials;
# CALLVAULT_TENANT, the tenant's name; KMS_KEY_ARN_FILE, the file holding
# its KMS key's ARN (scripts/compose-kms-key.sh).
#
# Safe to run again, as every `docker compose up` does: what exists is kept
# and nothing is created twice. The tokens are printed once, on standard
# output as JSON lines (`token create --json`), when they are issued: only
# their SHA-256 is stored. Everything else goes to standard error.
set -eu
cv=${1:-callvault}
# Each command opens the catalog, whose INFO lines would bury the tokens.
export CALLVAULT_LOG="${CALLVAULT_LOG:-warn}"
: "${CALLVAULT_TENANT:?}" "${CALLVAULT_AUDIT_SIGNING_KEY:?}" "${KMS_KEY_ARN_FILE:?}"
say() { echo "bootstrap: $*" >&2; }

# The deployment's audit signing key: required with --kms aws, and the same
# for every node and operator command, which all sign audit events.
if [ -e "$CALLVAULT_AUDIT_SIGNING_KEY" ]; then
  say "audit signing key $CALLVAULT_AUDIT_SIGNING_KEY (made by an earlier run)"
else
  verifier=$("$cv" audit keygen --name callvault-compose -o "$CALLVAULT_AUDIT_SIGNING_KEY")
  say "audit signing key $CALLVAULT_AUDIT_SIGNING_KEY created; auditors verify with: $verifier"
fi

arn=$(cat "$KMS_KEY_ARN_FILE")
say "KMS key $arn"

# Each command's output is taken in an assignment of its own, where `set -e`
# sees its failure. Names are [A-Za-z0-9._-]: the JSON holds them as written.
tenants=$("$cv" tenant list --json)
if printf '%s' "$tenants" | grep -qF "\"name\":\"$CALLVAULT_TENANT\""; then
  say "tenant $CALLVAULT_TENANT exists (created by an earlier run)"
else
  created=$("$cv" tenant create "$CALLVAULT_TENANT" --kms-key "$arn" --json)
  say "tenant created: $created"
fi

# Tokens for a tenant that never had one: the first run, or a run that
# stopped between the tenant and its tokens. A tenant whose tokens were all
# revoked gets no new ones behind the operator's back.
tokens=$("$cv" token list --tenant "$CALLVAULT_TENANT" --json)
if [ "$tokens" = "[]" ]; then
  say "tokens of tenant $CALLVAULT_TENANT, shown this once (stored only as SHA-256):"
  for role in ingest supervisor compliance admin; do
    "$cv" token create --tenant "$CALLVAULT_TENANT" --role "$role" --json
  done
else
  say "no new tokens: tenant $CALLVAULT_TENANT got its tokens from an earlier run, which printed them;" \
    "issue more with: callvault token create --tenant $CALLVAULT_TENANT --role ROLE" \
    "(in docker compose: docker compose exec callvault callvault token create …)"
fi
