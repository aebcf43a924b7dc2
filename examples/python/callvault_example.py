"""A callvault client in Python: what a contact-center integration does.

    python generate.py                      # stubs from ../../proto into ./generated
    export CALLVAULT_INGEST_TOKEN=… CALLVAULT_SUPERVISOR_TOKEN=…
    python callvault_example.py --address 127.0.0.1:50051 call.wav \\
        --call-id call-42 --label agent=alex --label queue=billing

In order, it:

1. checks the server's health (the standard grpc.health.v1 service) for the
   ingest and playback services;
2. ingests the file, streamed from disk in 1 MiB messages after a header
   (call id, start time, labels), retrying on UNAVAILABLE and ABORTED with
   the same call id: ingest is idempotent on the call id, so a retry after a
   lost answer returns the recording the first attempt committed;
3. ingests it again with the same call id, which answers `deduplicated`;
4. pages through ListRecordings until it finds the recording;
5. reads it with GetRecording;
6. plays it back in full (server streaming) and compares the SHA-256 of
   what it received with the file's and with the recording's `sha256`;
7. asks for a recording that does not exist and shows the NOT_FOUND status.

It prints a JSON summary on stdout (progress goes to stderr) and exits 0 only
if every check held: 1 on a failed check or RPC, 2 on a usage error.

Tokens go in the `authorization: Bearer <token>` metadata of each call: the
ingest token uploads, the supervisor token reads and plays.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import pathlib
import random
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = pathlib.Path(__file__).resolve().parent

# Audio per ingest message. The server accepts up to 4 MiB per message
# (RESOURCE_EXHAUSTED beyond); 1 MiB keeps memory flat and retries cheap.
MESSAGE_BYTES = 1024 * 1024

# Statuses after which the whole upload is sent again with the same call id:
# UNAVAILABLE (connection lost, server restarting, KMS unreachable) and
# ABORTED (the server gave up on the upload; nothing of it was kept).
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})

log = logging.getLogger("callvault_example")


def load_stubs(directory: pathlib.Path) -> tuple[Any, Any]:
    """Imports the stubs generate.py wrote into `directory`."""
    sys.path.insert(0, str(directory))
    try:
        from callvault.v1 import callvault_pb2, callvault_pb2_grpc
    except ImportError as e:
        raise SystemExit(
            f"error: no callvault stubs in {directory} ({e}); "
            f"run: python {HERE / 'generate.py'} --out {directory}"
        ) from e
    return callvault_pb2, callvault_pb2_grpc


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates a request."""
    return (("authorization", f"Bearer {token}"),)


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(MESSAGE_BYTES):
            digest.update(piece)
    return digest.hexdigest()


def ingest_requests(pb: Any, header: Any, path: pathlib.Path) -> Iterator[Any]:
    """The header first, then the file in MESSAGE_BYTES pieces, read and
    hashed as sent, then the trailer with their SHA-256: the server commits
    nothing unless what arrived hashes the same (else INVALID_ARGUMENT,
    reason SHA256_MISMATCH)."""
    yield pb.IngestRequest(header=header)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(MESSAGE_BYTES):
            digest.update(piece)
            yield pb.IngestRequest(data=piece)
    yield pb.IngestRequest(trailer=pb.IngestTrailer(sha256=digest.digest()))


class Callvault:
    """The callvault services on one channel, with a token per role."""

    def __init__(
        self,
        channel: grpc.Channel,
        pb: Any,
        pb_grpc: Any,
        ingest_token: str,
        supervisor_token: str,
        timeout: float,
    ) -> None:
        self.pb = pb
        self.health = health_pb2_grpc.HealthStub(channel)
        self.ingest_stub = pb_grpc.IngestServiceStub(channel)
        self.playback = pb_grpc.PlaybackServiceStub(channel)
        self.ingest_token = ingest_token
        self.supervisor_token = supervisor_token
        self.timeout = timeout

    def check_health(self) -> dict[str, str]:
        """Each service's serving status. Health needs no token; wait_for_ready
        waits (up to the deadline) for a server that is still starting."""
        statuses = {}
        for name in ("IngestService", "PlaybackService"):
            service = self.pb.DESCRIPTOR.services_by_name[name].full_name
            answer = self.health.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=self.timeout,
                wait_for_ready=True,
            )
            statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return statuses

    def ingest(self, path: pathlib.Path, header: Any, attempts: int) -> tuple[Any, int]:
        """Uploads `path`; returns (IngestResponse, attempts it took).

        Every attempt sends the whole file under the same call id. Whatever
        became of an earlier attempt, the server ends up with one recording:
        if it committed, the retry answers it with `deduplicated` set."""
        for attempt in range(1, attempts + 1):
            try:
                response = self.ingest_stub.Ingest(
                    ingest_requests(self.pb, header, path),
                    metadata=bearer(self.ingest_token),
                    timeout=self.timeout,
                )
                return response, attempt
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE or attempt == attempts:
                    raise
                # Exponential backoff with full jitter, so that many clients
                # cut off by one outage do not all come back at once.
                delay = random.uniform(0, min(10.0, 0.5 * 2 ** (attempt - 1)))
                log.warning(
                    "ingest attempt %d: %s: %s; retrying in %.1f s with the same call id",
                    attempt,
                    e.code().name,
                    e.details(),
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def find_listed(self, recording_id: str) -> tuple[Any | None, int]:
        """Pages through ListRecordings; returns (the listed recording or
        None, pages read)."""
        token, pages = "", 0
        while True:
            page = self.playback.ListRecordings(
                self.pb.ListRecordingsRequest(page_size=100, page_token=token),
                metadata=bearer(self.supervisor_token),
                timeout=self.timeout,
            )
            pages += 1
            for recording in page.recordings:
                if recording.recording_id == recording_id:
                    return recording, pages
            token = page.next_page_token
            if not token:
                return None, pages

    def get(self, recording_id: str) -> Any:
        return self.playback.GetRecording(
            self.pb.GetRecordingRequest(recording_id=recording_id),
            metadata=bearer(self.supervisor_token),
            timeout=self.timeout,
        )

    def play(self, recording_id: str, out: BinaryIO | None) -> tuple[str, int, bool]:
        """Streams the whole recording; returns (SHA-256, bytes, whether every
        message started where the previous one ended)."""
        digest = hashlib.sha256()
        received, contiguous = 0, True
        responses = self.playback.Play(
            self.pb.PlayRequest(
                recording_id=recording_id,
                offset_bytes=0,
                purpose=self.pb.PLAYBACK_PURPOSE_DOWNLOAD
                if out
                else self.pb.PLAYBACK_PURPOSE_STREAM,
            ),
            metadata=bearer(self.supervisor_token),
            timeout=self.timeout,
        )
        for message in responses:
            contiguous &= message.offset_bytes == received
            digest.update(message.data)
            received += len(message.data)
            if out is not None:
                out.write(message.data)
        return digest.hexdigest(), received, contiguous


def parse_labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--label {pair!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def parse_time(text: str) -> datetime.datetime:
    # fromisoformat reads a trailing Z only from Python 3.11 on.
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a UTC offset (e.g. Z)")
    return when


def channel_for(address: str, ca: pathlib.Path | None) -> grpc.Channel:
    """TLS against `ca`'s roots when given, else plaintext (loopback, tests)."""
    if ca is None:
        return grpc.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    return grpc.secure_channel(address, credentials)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Ingest, list, get and play back a recording on a callvault server.",
    )
    parser.add_argument("file", type=pathlib.Path, help="the audio file to archive")
    parser.add_argument(
        "--address", default="127.0.0.1:50051", help="server host:port (default %(default)s)"
    )
    parser.add_argument(
        "--call-id", required=True, help="the platform's call id (the idempotency key)"
    )
    parser.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)"
    )
    parser.add_argument(
        "--start-time",
        type=parse_time,
        help="when the call started, RFC 3339 (default: now)",
    )
    parser.add_argument(
        "--ingest-token",
        default=os.environ.get("CALLVAULT_INGEST_TOKEN"),
        help="ingest role token (default: $CALLVAULT_INGEST_TOKEN)",
    )
    parser.add_argument(
        "--supervisor-token",
        default=os.environ.get("CALLVAULT_SUPERVISOR_TOKEN"),
        help="supervisor role token (default: $CALLVAULT_SUPERVISOR_TOKEN)",
    )
    parser.add_argument(
        "--ca",
        type=pathlib.Path,
        help="PEM file of the CA that signed the server's certificate: use TLS",
    )
    parser.add_argument(
        "--stubs",
        type=pathlib.Path,
        default=HERE / "generated",
        help="directory generate.py wrote the stubs to (default: generated/ beside this script)",
    )
    parser.add_argument("--output", type=pathlib.Path, help="also write the played-back audio here")
    parser.add_argument(
        "--attempts", type=int, default=5, help="ingest attempts (default %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="deadline of each call in seconds"
    )
    args = parser.parse_args(argv)
    try:
        args.labels = parse_labels(args.label)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    for flag, env in (
        ("ingest_token", "CALLVAULT_INGEST_TOKEN"),
        ("supervisor_token", "CALLVAULT_SUPERVISOR_TOKEN"),
    ):
        if not getattr(args, flag):
            parser.error(f"--{flag.replace('_', '-')} or ${env} is required")
    if args.attempts < 1:
        parser.error("--attempts must be at least 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    pb, pb_grpc = load_stubs(args.stubs)
    with channel_for(args.address, args.ca) as channel:
        vault = Callvault(
            channel, pb, pb_grpc, args.ingest_token, args.supervisor_token, args.timeout
        )
        checks: dict[str, bool] = {}

        health = vault.check_health()
        log.info("health: %s", health)
        checks["serving"] = all(status == "SERVING" for status in health.values())

        header = pb.IngestHeader(external_call_id=args.call_id, labels=args.labels)
        header.start_time.FromDatetime(
            args.start_time or datetime.datetime.now(datetime.timezone.utc)
        )
        expected_sha256 = file_sha256(args.file)
        expected_size = args.file.stat().st_size

        first, attempts = vault.ingest(args.file, header, args.attempts)
        recording_id = first.recording.recording_id
        log.info(
            "ingested %s as %s in %d attempt(s)%s",
            args.file,
            recording_id,
            attempts,
            " (already archived: deduplicated)" if first.deduplicated else "",
        )

        # The same call id again, as a platform that never saw the first
        # answer would send it: nothing new is written.
        second, _ = vault.ingest(args.file, header, args.attempts)
        log.info("second ingest of %s: deduplicated=%s", args.call_id, second.deduplicated)
        checks["second_ingest_deduplicated"] = second.deduplicated
        checks["second_ingest_same_recording"] = second.recording.recording_id == recording_id

        listed, pages = vault.find_listed(recording_id)
        log.info("listed: %s (%d page(s))", listed is not None, pages)
        checks["listed"] = listed is not None
        if listed is not None:
            checks["listed_sha256"] = listed.sha256 == expected_sha256

        recording = vault.get(recording_id)
        checks["get_call_id"] = recording.external_call_id == args.call_id
        checks["get_size_bytes"] = recording.size_bytes == expected_size
        checks["get_sha256"] = recording.sha256 == expected_sha256
        if first.deduplicated:
            log.info(
                "the call was already archived: its labels and start time are the first upload's"
            )
        else:
            checks["get_labels"] = dict(recording.labels) == args.labels
            # The server keeps start times to the millisecond.
            checks["get_start_time"] = (
                recording.HasField("start_time")
                and recording.start_time.ToMilliseconds() == header.start_time.ToMilliseconds()
            )

        if args.output is not None:
            with args.output.open("wb") as out:
                played_sha256, played_bytes, contiguous = vault.play(recording_id, out)
        else:
            played_sha256, played_bytes, contiguous = vault.play(recording_id, None)
        log.info("played back %d bytes, SHA-256 %s", played_bytes, played_sha256)
        checks["play_contiguous"] = contiguous
        checks["play_size_bytes"] = played_bytes == recording.size_bytes
        sha256_match = played_sha256 == expected_sha256 == recording.sha256
        checks["play_sha256"] = sha256_match

        # An error a program acts on by its status code, not its message.
        unknown_id = str(uuid.uuid4())
        try:
            vault.get(unknown_id)
            unknown = {"recording_id": unknown_id, "code": "OK", "message": ""}
        except grpc.RpcError as e:
            unknown = {"recording_id": unknown_id, "code": e.code().name, "message": e.details()}
        log.info("GetRecording(%s): %s: %s", unknown_id, unknown["code"], unknown["message"])
        checks["unknown_recording_not_found"] = unknown["code"] == "NOT_FOUND"

    failed = sorted(name for name, held in checks.items() if not held)
    return {
        "ok": not failed,
        "failed_checks": failed,
        "health": health,
        "recording_id": recording_id,
        "external_call_id": recording.external_call_id,
        "size_bytes": recording.size_bytes,
        "chunk_count": recording.chunk_count,
        "sha256": recording.sha256,
        "file_sha256": expected_sha256,
        "played_sha256": played_sha256,
        "played_bytes": played_bytes,
        "sha256_match": sha256_match,
        "labels": dict(recording.labels),
        "audio": {
            "container": recording.audio.container,
            "codec": recording.audio.codec,
            "sample_rate_hz": recording.audio.sample_rate_hz,
            "channels": recording.audio.channels,
            "duration_ms": recording.audio.duration_ms,
        },
        "kms_key_arn": recording.kms_key_arn,
        "ingest": {"attempts": attempts, "deduplicated": first.deduplicated},
        "second_ingest": {
            "recording_id": second.recording.recording_id,
            "deduplicated": second.deduplicated,
        },
        "listed": listed is not None,
        "list_pages": pages,
        "unknown_recording": unknown,
        "checks": checks,
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        summary = run(args)
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    if not summary["ok"]:
        print(f"error: checks failed: {', '.join(summary['failed_checks'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
