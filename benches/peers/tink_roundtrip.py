#!/usr/bin/env python3
"""The peer of `cargo bench --bench perf -- roundtrip`: Google Tink's streaming
AEAD (AES256_GCM_HKDF_1MB) encrypting a file to a file and decrypting it back
to a file, on the same machine and the same input as callvault.

usage: tink_roundtrip.py INPUT WORKDIR ROUNDS

Prints on stdout one JSON object naming the versions, then one per round:
  {"tink": "1.16.1", "python": "3.11.7"}
  {"round": 1, "encrypt_s": 1.23, "decrypt_s": 0.98, "bytes": 536870912}
Only the encrypt and decrypt passes are timed (key generation and the
SHA-256 check of the decrypted file are not). Exits 2 when `tink` cannot be
imported (the bench then skips this peer), 1 when a decrypted file differs
from the input.
"""

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import time

try:
    import tink
    from tink import streaming_aead
except ImportError as e:  # the bench prints this and skips the peer
    print(f"tink is not importable with {sys.executable}: {e}", file=sys.stderr)
    sys.exit(2)

# Tink's own segment size: the application's reads and writes need not
# match it, 1 MiB is what a file copy would use.
BLOCK = 1 << 20
AAD = b"callvault-bench"


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def encrypt(primitive, src, dst):
    with open(src, "rb") as plain, open(dst, "wb") as out:
        with primitive.new_encrypting_stream(out, AAD) as enc:
            while block := plain.read(BLOCK):
                enc.write(block)


def decrypt(primitive, src, dst):
    with open(src, "rb") as sealed, open(dst, "wb") as out:
        with primitive.new_decrypting_stream(sealed, AAD) as dec:
            while block := dec.read(BLOCK):
                out.write(block)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    src, workdir, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    streaming_aead.register()
    template = streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB
    primitive = tink.new_keyset_handle(template).primitive(streaming_aead.StreamingAead)
    expected = sha256_of(src)
    print(json.dumps({"tink": importlib.metadata.version("tink"),
                      "python": platform.python_version()}), flush=True)
    sealed = os.path.join(workdir, "tink.sealed")
    opened = os.path.join(workdir, "tink.opened")
    for r in range(1, rounds + 1):
        t = time.perf_counter()
        encrypt(primitive, src, sealed)
        enc_s = time.perf_counter() - t
        t = time.perf_counter()
        decrypt(primitive, sealed, opened)
        dec_s = time.perf_counter() - t
        if sha256_of(opened) != expected:
            print(f"round {r}: the decrypted file differs from the input", file=sys.stderr)
            sys.exit(1)
        size = os.path.getsize(src)
        os.remove(sealed)
        os.remove(opened)
        print(json.dumps({"round": r, "encrypt_s": enc_s, "decrypt_s": dec_s, "bytes": size}),
              flush=True)


if __name__ == "__main__":
    main()
