"""Produce latency and throughput, same-mesh and cross-mesh, tracing on and off.

Baselines measured in the same run: a raw iroh round trip (64 B on an open stream), an
``fsync`` of a small append, and raw stream throughput. Run: ``python -m bench.produce``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import iroh

from bench.isolation import ensure_isolated
from bench.report import save, summary_ms, table
from fabric import control
from fabric.client import FabricClient
from fabric.launcher import NodeProcess

# Every span recorded; 1% of traces recorded (head sampling, the standard OTel variables);
# the SDK off. Unsampled spans still propagate context, so sampled traces stay whole.
TRACING = {
    "on": {},
    "sampled 1%": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    "off": {"OTEL_SDK_DISABLED": "true"},
}
FAST = ["--heartbeat", "0.3", "--suspect-after", "1.0", "--remove-after", "2.0"]


async def raw_round_trips(n: int, batch: int) -> tuple[list[float], float]:
    """64-byte echoes on one open iroh stream (the transport's floor), then raw throughput:
    ``batch`` 100-byte messages per write, echoed back, as many messages as produces."""
    opts = lambda: iroh.EndpointOptions(preset=iroh.preset_minimal(), bind_addr="127.0.0.1:0")  # noqa: E731
    a, b = await iroh.Endpoint.bind(opts()), await iroh.Endpoint.bind(opts())
    a.set_alpns([b"bench/echo"])

    async def echo() -> None:
        conn = await (await (await a.accept_next()).accept()).connect()
        bi = await conn.accept_bi()
        recv, send = bi.recv(), bi.send()
        while data := await recv.read(65536):
            await send.write_all(data)
        await send.finish()

    server = asyncio.create_task(echo())
    conn = await b.connect(iroh.EndpointAddr(a.id(), None, a.addr().direct_addresses()), b"bench/echo")
    bi = await conn.open_bi()
    send, recv = bi.send(), bi.recv()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await send.write_all(b"x" * 64)
        await recv.read_exact(64)
        samples.append(time.perf_counter() - start)
    chunk = b"m" * 100 * batch
    start = time.perf_counter()
    for _ in range(max(1, n // batch)):
        await send.write_all(chunk)
        await recv.read_exact(len(chunk))
    throughput = max(1, n // batch) * batch / (time.perf_counter() - start)
    await send.finish()
    await asyncio.wait_for(server, 5)
    await b.close()
    await a.close()
    return samples, throughput


def fsyncs(directory: Path, n: int) -> list[float]:
    fd = os.open(directory / "fsync.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        os.write(fd, b"r" * 100)
        os.fsync(fd)
        samples.append(time.perf_counter() - start)
    os.close(fd)
    return samples


def start_cluster(root: Path, env: dict[str, str]) -> dict[str, NodeProcess]:
    def node(mesh: str, type: str, bootstrap=(), watch=()) -> NodeProcess:
        proc = NodeProcess(mesh, type, root / f"{mesh}-{type}", bootstrap, watch, env=env, extra=FAST)
        return proc.start()

    b1, b2 = node("mesh1", "broker"), node("mesh2", "broker")
    for n in (b1, b2):
        n.wait_ready()
    gw = node("mesh1", "gateway", [b1.address, b2.address], ["mesh2"])
    gw.wait_ready()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        names = {e["name"] for e in control.request_sync(gw.control_path, "directory")["entries"]}
        if {b1.name, b2.name} <= names:
            break
        time.sleep(0.05)
    return {"b1": b1, "b2": b2, "gw": gw}


async def measure(nodes: dict[str, NodeProcess], records: int, concurrency: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    paths = {"direct to broker": (nodes["b1"].address, nodes["b1"].name),
             "same-mesh via gateway": (nodes["gw"].address, nodes["b1"].name),
             "cross-mesh via gateway": (nodes["gw"].address, nodes["b2"].name)}
    for label, (via, target) in paths.items():
        async with await FabricClient.connect(via) as client:
            for _ in range(20):  # warm up connections and code paths
                await client.produce("warmup", b"w", to=target)
            samples = []
            for i in range(records):
                start = time.perf_counter()
                await client.produce("bench", b"v" * 100, to=target)
                samples.append(time.perf_counter() - start)
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    await client.produce("bench", b"v" * 100, to=target)

            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(records)))
            throughput = records / (time.perf_counter() - start)
        out[label] = {**summary_ms(samples), "throughput_rps": throughput}
    # The seed's writer: the gateway itself produces across meshes (one hop), timed in-process.
    writer = control.request_sync(nodes["gw"].control_path, "produce_many", timeout=120, to=nodes["b2"].name,
                                  topic="bench", count=records, size=100, concurrency=concurrency)
    out["cross-mesh, writer on gateway"] = {**summary_ms(writer["latencies_s"]),
                                            "throughput_rps": writer["throughput_rps"]}
    batched = control.request_sync(nodes["gw"].control_path, "produce_many", timeout=120, to=nodes["b2"].name,
                                   topic="bench", count=records * 20, size=100, concurrency=4, batch=concurrency)
    out[f"cross-mesh, writer on gateway, batches of {concurrency}"] = {
        "p50_ms": float("nan"), "p99_ms": float("nan"), "throughput_rps": batched["throughput_rps"]}
    return out


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="meshfabric-bench-") as tmp:
        root = Path(tmp)
        rtt_samples, raw_rps = await raw_round_trips(args.records, args.concurrency)
        rtt = summary_ms(rtt_samples)
        fs = summary_ms(fsyncs(root, args.records))
        floor_ms = rtt["p50_ms"] + fs["p50_ms"]
        results: dict = {"baseline": {"raw_rtt": rtt, "fsync": fs, "floor_p50_ms": floor_ms,
                                      "raw_throughput_mps": raw_rps}, "runs": {}}
        for tracing, env in TRACING.items():
            nodes = start_cluster(root / f"tracing-{tracing}", env)
            try:
                with mock.patch.dict(os.environ, env):  # the client traces (or not) like the nodes
                    results["runs"][tracing] = await measure(nodes, args.records, args.concurrency)
            finally:
                for node in nodes.values():
                    node.stop()
    rows = [["raw iroh round trip (64 B, open stream)", "-", rtt["p50_ms"], rtt["p99_ms"], "-", raw_rps, 1.0],
            ["fsync of a 100 B append", "-", fs["p50_ms"], fs["p99_ms"], "-", "-", "-"]]
    for tracing, runs in results["runs"].items():
        for label, r in runs.items():
            rows.append([label, tracing, r["p50_ms"], r["p99_ms"], r["p50_ms"] / floor_ms,
                         r["throughput_rps"], r["throughput_rps"] / raw_rps])
    print(f"\nproduce: {args.records} sequential records per path, then {args.records} with "
          f"{args.concurrency} in flight; floor = raw round trip + fsync = {floor_ms:.3f} ms; raw stream "
          f"throughput = {args.concurrency} x 100 B messages per write, echoed\n")
    print(table(["path", "tracing", "p50 ms", "p99 ms", "p50 / floor", "records/s", "/ raw stream"], rows))
    print(f"\nresults: {save('produce', results)}")


if __name__ == "__main__":
    ensure_isolated("bench.produce")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    asyncio.run(main(parser.parse_args()))
