"""Generates the callvault gRPC stubs for Python from the repository's proto/.

    python generate.py                          # ../../proto -> ./generated
    python generate.py --proto DIR --out DIR

The stubs are not committed: generated from the proto the server was built
from, they cannot drift from it. The output is the package
`callvault.v1` (`callvault_pb2`, `callvault_pb2_grpc` and `.pyi` type
stubs); put its directory on `sys.path` (callvault_example.py's `--stubs`).
"""

from __future__ import annotations

import argparse
import importlib.resources
import pathlib
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_FILE = "callvault/v1/callvault.proto"


def generate(proto_dir: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Runs protoc (the one grpcio-tools ships) on callvault.proto into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # callvault.proto imports google/protobuf/timestamp.proto. grpcio-tools
    # ships the well-known types under grpc_tools/_proto; the command line
    # `python -m grpc_tools.protoc` adds that include path itself, but
    # protoc.main() does not, so name it here.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO_FILE,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed (exit code {code}) on {proto_dir / PROTO_FILE}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--proto",
        type=pathlib.Path,
        default=HERE.parent.parent / "proto",
        help="directory holding callvault/v1/callvault.proto (default: the repository's proto/)",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=HERE / "generated",
        help="output directory (default: generated/ beside this script)",
    )
    args = parser.parse_args()
    try:
        generate(args.proto, args.out)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"stubs generated in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
