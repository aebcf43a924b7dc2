#!/usr/bin/env bash
# docker-compose.yml's topology without containers, so that CI, which has no
# container engine, runs what `docker compose up` runs:
#
#   compose service     here
#   postgres            the local PostgreSQL (127.0.0.1:5432, trust auth), a fresh database
#   minio, kms          one moto server (S3 and KMS) on a free loopback port
#   bucket, kms-key     boto3 from moto's venv: the bucket, the key, its ARN in secrets/kms-key-arn
#   bootstrap           scripts/compose-bootstrap.sh itself, run twice: the second run creates nothing
#   callvault, -2       two `callvault serve` nodes on free loopback ports
#
# with the compose file's CALLVAULT_* variables (tests/api/compose.rs checks
# that every one of the nodes' variables is set here too). Then a call made
# by sox goes in through node 1 and comes back out of node 2, over gRPC and
# through a signed URL from node 2's HTTP listener, byte for byte, and the
# nodes' /metrics count it. Everything listens on loopback: cleartext needs
# no CALLVAULT_ALLOW_INSECURE here. Every wait and command is bounded; the
# processes and the database go away at exit.
#
#   scripts/compose-topology.sh [CALLVAULT_BINARY]     (default: target/debug/callvault)
#
# Needs what scripts/test.sh installs: PostgreSQL, moto in
# $CALLVAULT_MOTO_VENV (default target/moto-venv), sox, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

BIN=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/debug/callvault}")
MOTO_VENV=$(realpath "${CALLVAULT_MOTO_VENV:-target/moto-venv}")
PG=${CALLVAULT_TEST_PG:-postgres://postgres@127.0.0.1:5432}
# Only the variables set below reach callvault: none from the caller's
# environment (a CALLVAULT_TOKEN, an AWS profile) may change what is tested.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(CALLVAULT|AWS)_' || true)

say() { echo "compose-topology: $*"; }
fail() {
  echo "compose-topology: FAILED: $*" >&2
  exit 1
}
[ -x "$BIN" ] || fail "no callvault binary at $BIN (cargo build --bin callvault)"
[ -x "$MOTO_VENV/bin/moto_server" ] || fail "no moto in $MOTO_VENV (scripts/test.sh installs it)"
for tool in psql sox curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/test.sh installs it)"
done
# JSON fields by a Python expression over `d`, the document on stdin.
json() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
# The same over JSON lines: `d` is the list of their documents.
jsonl() { python3 -c 'import json, sys; d = [json.loads(l) for l in sys.stdin if l.strip()]; print(eval(sys.argv[1]))' "$1"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }
# Bounded: no command of the script waits longer than this.
T=60

WORK=$(mktemp -d)
DB=cv_compose_$(python3 -c 'import uuid; print(uuid.uuid4().hex)')
pids=()
cleanup() {
  local status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    for f in "$WORK"/*.log; do
      [ -f "$f" ] && { echo "--- $f (last 40 lines)"; tail -n 40 "$f"; } >&2
    done
  fi
  timeout "$T" psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# postgres: a database of its own.
timeout "$T" psql "$PG/postgres" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $DB" >/dev/null

# minio and kms: moto, S3 and KMS on one port.
MOTO_PORT=$(free_port)
"$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
pids+=($!)
deadline=$((SECONDS + T))
until curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$MOTO_PORT/"; do
  [ "$SECONDS" -lt "$deadline" ] || fail "moto did not answer on port $MOTO_PORT within ${T}s"
  sleep 0.1
done

# x-callvault-backend of docker-compose.yml, value for value where the
# addresses allow.
mkdir -m 0700 "$WORK/secrets"
export CALLVAULT_DATABASE_URL="$PG/$DB"
export CALLVAULT_STORE=s3://recordings/archive
export CALLVAULT_STORE_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export CALLVAULT_KMS=aws
export CALLVAULT_KMS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export CALLVAULT_REGION=eu-west-1
export CALLVAULT_AUDIT_SIGNING_KEY="$WORK/secrets/audit-signing.key"
export AWS_ACCESS_KEY_ID=callvault AWS_SECRET_ACCESS_KEY=callvault-secret
export KMS_KEY_ARN_FILE="$WORK/secrets/kms-key-arn"

# bucket and kms-key: what `mc mb` and `aws kms create-key` do there.
timeout "$T" "$MOTO_VENV/bin/python" - <<'PY'
import os
from urllib.parse import urlparse
import boto3

region = os.environ["CALLVAULT_REGION"]
s3 = boto3.client("s3", endpoint_url=os.environ["CALLVAULT_STORE_ENDPOINT"], region_name=region)
s3.create_bucket(
    Bucket=urlparse(os.environ["CALLVAULT_STORE"]).netloc,
    CreateBucketConfiguration={"LocationConstraint": region},
)
kms = boto3.client("kms", endpoint_url=os.environ["CALLVAULT_KMS_ENDPOINT"], region_name=region)
arn = kms.create_key(Description="callvault tenant key (compose topology)")["KeyMetadata"]["Arn"]
with open(os.environ["KMS_KEY_ARN_FILE"], "w") as f:
    f.write(arn + "\n")
PY
ARN=$(cat "$KMS_KEY_ARN_FILE")

# bootstrap, as the compose job runs it: with /bin/sh, twice (every `up`
# runs it again).
export CALLVAULT_TENANT=acme
for run in 1 2; do
  timeout "$T" sh scripts/compose-bootstrap.sh "$BIN" >"$WORK/tokens-$run.jsonl" 2>"$WORK/bootstrap-$run.log" ||
    fail "bootstrap run $run: $(cat "$WORK/bootstrap-$run.log")"
  sed 's/^/  | /' "$WORK/bootstrap-$run.log"
done
token() { jsonl "[t['token'] for t in d if t['role'] == '$1'][0]" <"$WORK/tokens-1.jsonl"; }
roles=$(jsonl "' '.join(sorted(t['role'] for t in d))" <"$WORK/tokens-1.jsonl")
[ "$roles" = "admin compliance ingest supervisor" ] || fail "the first bootstrap issued tokens for [$roles], not one per role"
[ ! -s "$WORK/tokens-2.jsonl" ] || fail "the second bootstrap issued tokens again: $(cat "$WORK/tokens-2.jsonl")"
unset CALLVAULT_TENANT
tenants=$(timeout "$T" "$BIN" tenant list --json)
[ "$(json "[(t['name'], t['key_arn']) for t in d]" <<<"$tenants")" = "[('acme', '$ARN')]" ] ||
  fail "after two bootstraps the tenants are $tenants, not acme alone with $ARN"
INGEST=$(token ingest)
SUPERVISOR=$(token supervisor)

# callvault and callvault-2: x-callvault-listeners on loopback ports.
node() {
  local n=$1 grpc http metrics
  grpc=$(free_port) http=$(free_port) metrics=$(free_port)
  CALLVAULT_LISTEN="127.0.0.1:$grpc" CALLVAULT_HTTP_LISTEN="127.0.0.1:$http" \
    CALLVAULT_METRICS_LISTEN="127.0.0.1:$metrics" CALLVAULT_HTTP_PUBLIC_URL="http://127.0.0.1:$http" \
    "$BIN" serve >"$WORK/node$n.log" 2>&1 &
  pids+=($!)
  eval "GRPC$n=$grpc HTTP$n=$http METRICS$n=$metrics PID$n=$!"
}
node 1
node 2
# The compose health check's probe.
deadline=$((SECONDS + T))
for n in 1 2; do
  pid_var=PID$n metrics_var=METRICS$n
  until curl -fsS --max-time 10 -o /dev/null "http://127.0.0.1:${!metrics_var}/metrics" 2>/dev/null; do
    kill -0 "${!pid_var}" 2>/dev/null || fail "node $n exited: $(tail -n 20 "$WORK/node$n.log")"
    [ "$SECONDS" -lt "$deadline" ] || fail "node $n: GET /metrics did not answer within ${T}s"
    sleep 0.2
  done
done
say "nodes up: gRPC 127.0.0.1:$GRPC1 and 127.0.0.1:$GRPC2"

# A two-minute stereo call, several chunks, made by sox.
timeout "$T" sox -n -r 8000 -c 2 -b 16 "$WORK/call.wav" synth 120 sine 300-3400 sine 440
WANT=$(sha256 "$WORK/call.wav")
SIZE=$(stat -c %s "$WORK/call.wav")

ingested=$(CALLVAULT_SERVER="http://127.0.0.1:$GRPC1" CALLVAULT_TOKEN=$INGEST timeout "$T" \
  "$BIN" ingest "$WORK/call.wav" --call-id compose-topology-1 --label source=compose-topology --json)
ID=$(json "d['recording_id']" <<<"$ingested")
[ "$(json "d['sha256']" <<<"$ingested")" = "$WANT" ] || fail "node 1 stored SHA-256 $(json "d['sha256']" <<<"$ingested"), the file's is $WANT"
say "ingested through node 1: $ID, $(json "d['size_bytes']" <<<"$ingested") bytes in $(json "d['chunk_count']" <<<"$ingested") chunks"

export CALLVAULT_SERVER="http://127.0.0.1:$GRPC2" CALLVAULT_TOKEN=$SUPERVISOR
listed=$(timeout "$T" "$BIN" recordings list --call-id compose-topology-1 --json)
[ "$(json "[r['recording_id'] for r in (d['recordings'] if isinstance(d, dict) else d)]" <<<"$listed")" = "['$ID']" ] ||
  fail "node 2 lists $listed for call compose-topology-1"
got=$(timeout "$T" "$BIN" recordings get --call-id compose-topology-1 --json)
[ "$(json "(d['recording_id'], d['labels'])" <<<"$got")" = "('$ID', {'source': 'compose-topology'})" ] ||
  fail "node 2 gets $got for call compose-topology-1"
timeout "$T" "$BIN" play "$ID" -o "$WORK/played.wav"
[ "$(sha256 "$WORK/played.wav")" = "$WANT" ] || fail "node 2 played back other bytes than node 1 ingested"
url=$(timeout "$T" "$BIN" play-url "$ID")
case "$url" in
  "http://127.0.0.1:$HTTP2/"*) ;;
  *) fail "node 2 issued $url, not a URL under its CALLVAULT_HTTP_PUBLIC_URL http://127.0.0.1:$HTTP2" ;;
esac
timeout "$T" curl -fsS -o "$WORK/url.wav" "$url"
[ "$(sha256 "$WORK/url.wav")" = "$WANT" ] || fail "node 2's signed URL served other bytes than node 1 ingested"
unset CALLVAULT_SERVER CALLVAULT_TOKEN
say "listed, got, played and fetched through node 2: SHA-256 $WANT"

# The value of a metric family's samples (the text format), summed.
metric() {
  timeout "$T" curl -fsS "http://127.0.0.1:$1/metrics" | python3 -c '
import re, sys
name = sys.argv[1]
print(int(sum(float(m.group(1)) for m in re.finditer(r"^" + name + r"(?:\{[^}]*\})? (\S+)$", sys.stdin.read(), re.M))))' "$2"
}
[ "$(metric "$METRICS1" callvault_ingested_bytes_total)" -eq "$SIZE" ] ||
  fail "node 1 counts $(metric "$METRICS1" callvault_ingested_bytes_total) ingested bytes, not $SIZE"
[ "$(metric "$METRICS2" callvault_played_bytes_total)" -ge "$SIZE" ] ||
  fail "node 2 counts $(metric "$METRICS2" callvault_played_bytes_total) played bytes, fewer than the $SIZE it sent"
[ "$(metric "$METRICS2" callvault_ingested_bytes_total)" -eq 0 ] ||
  fail "node 2 counts ingested bytes, but the call went in through node 1"

say "OK in $((SECONDS - started)) s: bootstrap twice, two nodes over one catalog, store and KMS"
