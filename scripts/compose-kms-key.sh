#!/bin/sh
# docker-compose.yml's `kms-key` job (in the amazon/aws-cli image): the
# tenant's KMS key, created once in the KMS emulator, its ARN kept in
# $KMS_KEY_ARN_FILE on the `secrets` volume for scripts/compose-bootstrap.sh.
# A later run reuses the key: a new one would not open the recordings the
# first one protects.
#
# Environment: CALLVAULT_KMS_ENDPOINT, CALLVAULT_REGION (the names callvault
# reads them under), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, KMS_KEY_ARN_FILE.
set -eu
: "${CALLVAULT_KMS_ENDPOINT:?}" "${CALLVAULT_REGION:?}" "${KMS_KEY_ARN_FILE:?}"

kms() {
  aws --endpoint-url "$CALLVAULT_KMS_ENDPOINT" --region "$CALLVAULT_REGION" kms "$@"
}

if [ -s "$KMS_KEY_ARN_FILE" ]; then
  arn=$(cat "$KMS_KEY_ARN_FILE")
  # The file outlived the emulator's volume: the tenant's recordings are
  # unreadable, and a new key would hide that.
  if ! kms describe-key --key-id "$arn" >/dev/null; then
    echo "kms-key: $arn (from $KMS_KEY_ARN_FILE) is not in the KMS at $CALLVAULT_KMS_ENDPOINT; was its volume removed? \`docker compose down -v\` starts over" >&2
    exit 1
  fi
  echo "kms-key: KMS key $arn (created by an earlier run)"
else
  arn=$(kms create-key --description "callvault tenant key (docker compose)" \
    --query KeyMetadata.Arn --output text)
  printf '%s\n' "$arn" >"$KMS_KEY_ARN_FILE.tmp"
  mv "$KMS_KEY_ARN_FILE.tmp" "$KMS_KEY_ARN_FILE"
  echo "kms-key: KMS key $arn created"
fi

# The next job, scripts/compose-bootstrap.sh, runs as the callvault image's
# unprivileged user and writes the audit signing key beside the ARN.
dir=$(dirname "$KMS_KEY_ARN_FILE")
chown 65534:65534 "$dir"
chmod 0700 "$dir"
