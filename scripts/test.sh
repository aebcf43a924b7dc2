#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: formatting, clippy with
# -D warnings, and every test against real PostgreSQL and the moto S3 + KMS
# emulator. Installs and starts what it needs; stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests drive as a user would: real encoders generate the audio
# test set, strace watches fsyncs, the reference age CLI decrypts export
# bundles, curl and headless Chromium (through chromedriver) use the HTTP
# side door and the supervisor page; groff, zsh and fish check the man
# pages and completion scripts. Installed from Debian when missing.
PACKAGES=(strace ffmpeg sox libsox-fmt-all lame opus-tools flac vorbis-tools espeak-ng age curl chromium chromium-driver groff-base zsh fish)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PostgreSQL on 127.0.0.1:5432 (trust auth).
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  fi
  for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
fi
pg_isready -h 127.0.0.1 -p 5432 >/dev/null || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

# The S3 + KMS emulator (moto) from PyPI, in a venv under target/.
mkdir -p target
VENV="${CALLVAULT_MOTO_VENV:-target/moto-venv}"
if [ ! -x "$VENV/bin/moto_server" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]'
fi
# The Library of Congress bagit package validates export bags (tests/api/export.rs).
BAGIT_VENV="${CALLVAULT_BAGIT_VENV:-target/bagit-venv}"
if [ ! -x "$BAGIT_VENV/bin/bagit.py" ]; then
  python3 -m venv "$BAGIT_VENV"
  "$BAGIT_VENV/bin/pip" install --quiet --disable-pip-version-check bagit
fi
CALLVAULT_TEST_BAGIT="$(cd "$BAGIT_VENV/bin" && pwd)/bagit.py"
export CALLVAULT_TEST_BAGIT
# What an integrator uses from Python: grpcio, grpcio-tools and
# grpcio-health-checking to generate stubs from proto/ and run examples/python
# against a live server (tests/api/python_example.rs), and the
# Prometheus project's own text-format parsers (prometheus-client) to parse
# GET /metrics (tests/api/python_example.rs, tests/api/metrics.rs), and
# PyYAML with jsonschema to validate docker-compose.yml against the Compose
# Specification's schema (tests/api/compose.rs).
PY_VENV="${CALLVAULT_PY_VENV:-target/py-venv}"
if [ ! -x "$PY_VENV/bin/python" ] || ! "$PY_VENV/bin/python" -c 'import grpc, grpc_tools, grpc_health.v1.health_pb2, prometheus_client, yaml, jsonschema' 2>/dev/null; then
  python3 -m venv "$PY_VENV"
  "$PY_VENV/bin/pip" install --quiet --disable-pip-version-check -r examples/python/requirements.txt \
    'prometheus-client>=0.20' 'pyyaml>=6' 'jsonschema>=4'
fi
CALLVAULT_TEST_PYTHON="$(cd "$PY_VENV/bin" && pwd)/python"
export CALLVAULT_TEST_PYTHON
# LocalStack's KMS (host mode, no Docker) enforces key states and decrypts
# RSA-OAEP, which moto does not (tests/api/localstack.rs). 4.6.0 with these
# pins is what runs on Python 3.11.
LOCALSTACK_VENV="${CALLVAULT_LOCALSTACK_VENV:-target/localstack-venv}"
if [ ! -x "$LOCALSTACK_VENV/bin/localstack" ] || ! "$LOCALSTACK_VENV/bin/python" -c 'import rolo, service_identity' 2>/dev/null; then
  python3 -m venv "$LOCALSTACK_VENV"
  "$LOCALSTACK_VENV/bin/pip" install --quiet --disable-pip-version-check \
    'localstack-core[runtime]==4.6.0' 'cbor2<5.7' 'pyopenssl<24.3' 'cryptography<44' \
    'service_identity<24.2' 'psutil<7'
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >target/moto.log 2>&1 &
MOTO_PID=$!
LS_PORT=$(free_port)
# Only KMS, only on loopback, no DNS server of its own.
GATEWAY_LISTEN="127.0.0.1:$LS_PORT" SERVICES=kms DNS_ADDRESS=0 DISABLE_EVENTS=1 \
  "$LOCALSTACK_VENV/bin/python" -m localstack.cli.main start --host >target/localstack.log 2>&1 &
LS_PID=$!
trap 'kill "$MOTO_PID" "$LS_PID" 2>/dev/null || true' EXIT
python3 - "$PORT" <<'PY'
import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("moto did not start")
PY
python3 - "$LS_PORT" <<'PY'
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/_localstack/health"
for _ in range(600):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            if json.load(r).get("services", {}).get("kms") in ("available", "running"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("LocalStack did not start (see target/localstack.log)")
PY
export CALLVAULT_TEST_MOTO="http://127.0.0.1:$PORT"
export CALLVAULT_TEST_LOCALSTACK="http://127.0.0.1:$LS_PORT"
# moto's fixed test credentials, read by the AWS default chain and object_store.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1

cargo fmt --all --check
cargo clippy --all-targets --locked -- -D warnings
# The dependency tree: licenses, one version per crate (or a reason in
# deny.toml), crates.io only. cargo-deny is built from crates.io once.
if ! cargo deny --version >/dev/null 2>&1; then
  cargo install --locked cargo-deny
fi
cargo deny --log-level error check licenses bans sources
# The bounded load tests (tests/api/load.rs, tests/api/export_load.rs) run
# after the rest, alone, so that what they measure is the server and not the
# other tests; so does the Chromium test (tests/api/browser.rs), whose ffmpeg
# encodes and browser would otherwise take both cores from timing-sensitive
# tests.
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast -E 'not (test(/^load::/) | test(/^export_load::/) | test(/^browser::/))' || status=$?
  cargo nextest run --locked --no-fail-fast --test-threads 1 -E 'test(/^load::/) | test(/^export_load::/) | test(/^browser::/)' || status=$?
else
  # libtest filters are substrings: `load::` also names `export_load::`.
  cargo test --locked --no-fail-fast -- --skip load:: --skip browser:: || status=$?
  cargo test --locked --no-fail-fast --test api -- load:: browser:: --test-threads 1 || status=$?
fi
# docker-compose.yml's topology without containers, which CI cannot run:
# PostgreSQL, moto, the compose bootstrap script and two nodes
# (scripts/compose-topology.sh), with the callvault binary the tests above
# built into debug/ and ran (under the test profile: a `cargo build` here
# would compile the dev profile of the whole crate once more).
CALLVAULT_MOTO_VENV="$VENV" scripts/compose-topology.sh "${CARGO_TARGET_DIR:-target}/debug/callvault" || status=$?
exit "$status"
