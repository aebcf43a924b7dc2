#!/usr/bin/env python3
"""An independent RFC 9162 Merkle tree, used only to cross-check src/audit.

Written from the RFC's recursive definitions (section 2.1.1 MTH, 2.1.3.1 PATH,
2.1.4.1 PROOF/SUBPROOF) with hashlib alone, sharing no code or structure with
the Rust implementation. The Rust test `audit::proof::tests::python_reference_agrees`
runs it.

stdin:  {"leaves": [hex leaf data, ...],
         "inclusion": [[index, size], ...],
         "consistency": [[old_size, new_size], ...]}
stdout: {"roots": [hex MTH of the first n leaves, for n = 0 .. len(leaves)],
         "inclusion": [[hex, ...], ...], "consistency": [[hex, ...], ...]}
"""

import hashlib
import json
import sys


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d):
    if len(d) == 0:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return leaf_hash(d[0])
    k = largest_power_of_two_below(len(d))
    return node_hash(mth(d[:k]), mth(d[k:]))


def path(m, d):
    if len(d) == 1:
        return []
    k = largest_power_of_two_below(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b):
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def main():
    request = json.load(sys.stdin)
    leaves = [bytes.fromhex(x) for x in request["leaves"]]
    answer = {
        "roots": [mth(leaves[:n]).hex() for n in range(len(leaves) + 1)],
        "inclusion": [
            [h.hex() for h in path(i, leaves[:n])] for i, n in request["inclusion"]
        ],
        "consistency": [
            [h.hex() for h in subproof(m, leaves[:n], True)]
            for m, n in request["consistency"]
        ],
    }
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
