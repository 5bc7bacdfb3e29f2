"""The topology directory at scale: what its lookups cost with 10 entries and with 10,000.

Every produce resolves its broker by name, every gossip tick expires silent entries and every
heartbeat a node hears is applied, so each of these must not grow with the size of the meshes a
node watches (except ``expire``, which visits every entry by design). Timed in this process on
one ``fabric.directory.Directory`` per size, filled with digests of brokers, gateways and
computes over four meshes; the baseline is the same operation on the smallest directory.
The digests carry a placeholder signature: the directory never checks one (gossip does,
before it hands a digest over).

Run: ``python -m bench.directory``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import timeit
from collections.abc import Callable

from bench.report import save, table
from fabric.directory import Directory
from fabric.gossip import digest as digests
from fabric.gossip.digest import Digest, SignedDigest

SIZES = (10, 1_000, 10_000)
TYPES = ("broker", "gateway", "compute")


def node_ids(count: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(count)]


def digest_of(node_id: str, index: int, heartbeat: int = 1) -> SignedDigest:
    digest = Digest(node_id, f"mesh{index % 4}", TYPES[index % len(TYPES)], ("127.0.0.1:4242",), 1, heartbeat)
    return digests.sign(digest, lambda body: b"\0" * 64)


def filled(count: int) -> tuple[Directory, list[str]]:
    directory = Directory("f" * 64, suspect_after=1e9, remove_after=1e9)
    ids = node_ids(count)
    for index, node_id in enumerate(ids):
        directory.apply(digest_of(node_id, index), now=0.0)
    return directory, ids


def per_call_us(call: Callable[[], object], number: int) -> float:
    """The best of 5 runs of ``number`` calls, per call."""
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def measure(count: int, number: int) -> dict[str, float]:
    directory, ids = filled(count)
    last = directory.get(ids[-1])
    assert last is not None
    name, rng = last.name, random.Random(1)
    news = iter([digest_of(last.node_id, count - 1, heartbeat) for heartbeat in range(2, 5 * number + 2)])
    return {
        "resolve by name": per_call_us(lambda: directory.resolve(name), number),
        "resolve <mesh>.<type>": per_call_us(lambda: directory.resolve("mesh3.broker", rng), number),
        "apply a heartbeat": per_call_us(lambda: directory.apply(next(news), now=0.0), number),
        "expire (visits every entry)": per_call_us(lambda: directory.expire(now=0.0), max(1, number // count)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=2_000, help="calls per timing run (default 2000)")
    args = parser.parse_args(argv)
    results = {str(size): measure(size, args.number) for size in SIZES}
    smallest, largest = results[str(SIZES[0])], results[str(SIZES[-1])]
    rows = [[op, *(results[str(size)][op] for size in SIZES), largest[op] / smallest[op]] for op in smallest]
    print(f"\ndirectory operations, µs a call (best of 5 x {args.number}; "
          f"ratio: {SIZES[-1]:,} entries / {SIZES[0]})\n")
    print(table(["operation", *(f"{size:,} entries" for size in SIZES), "ratio"], rows))
    path = save("directory", {"sizes": list(SIZES), "us_per_call": results})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
