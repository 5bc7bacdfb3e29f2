"""Cross-mesh produce through the backbone, on real processes: no node watches another mesh.

The writer (a mesh1 broker, which is no backbone member) asks a mesh1 gateway to look the
target up; the gateway fetches mesh2's members from mesh2's gateway; the record then goes
straight to mesh2's broker, and the whole of it is one trace.
"""

from __future__ import annotations

import asyncio

import pytest

from fabric import control
from fabric.client import FabricClient
from fabric.errors import FabricError
from tests.integration.conftest import FAST_GOSSIP, directory_names, wait_until
from pytest_meshfabric import assert_stitched

pytestmark = pytest.mark.slow


def backbone_counts(node) -> dict[str, dict]:
    """mesh -> member counts of its newest summary, as ``node``'s backbone seat knows them."""
    reply = control.request_sync(node.control_path, "backbone")
    return {m["mesh"]: m["summary"]["counts"] for m in reply["meshes"] if m["summary"]}


def sees(node, mesh: str, **counts: int) -> bool:
    got = backbone_counts(node).get(mesh, {})
    return all(got.get(type, 0) == n for type, n in counts.items())


def trace_of(spans, root_name: str, expected: set[tuple[str, str]], nth: int = -1):
    """The trace of the ``nth`` root span called ``root_name``, once it holds ``expected``."""
    roots = sorted((s for s in spans if s.name == root_name and s.parent_span_id is None), key=lambda s: s.start_ns)
    if not roots:
        return None
    trace = [s for s in spans if s.trace_id == roots[nth].trace_id]
    return trace if expected <= {(s.service_name, s.name) for s in trace} else None


@pytest.fixture
def env_to_receiver(receiver, monkeypatch):
    for key, value in receiver.env("http/protobuf", bsp_schedule_delay_ms=100).items():
        monkeypatch.setenv(key, value)


@pytest.mark.asyncio
async def test_cross_mesh_produce_via_the_backbone_is_one_stitched_trace(spawn, receiver, env_to_receiver):
    b1, b2 = spawn("mesh1", "broker"), spawn("mesh2", "broker")
    gw1 = spawn("mesh1", "gateway", [b1.address])
    gw2 = spawn("mesh2", "gateway", [b2.address], extra=["--backbone-peer", gw1.address])
    wait_until(lambda: sees(gw1, "mesh2", broker=1, gateway=1), 10, "mesh1's gateway to see mesh2's summary")
    wait_until(lambda: gw1.name in directory_names(b1), 10, "the writer to know its gateway")

    async with await FabricClient.connect(b1.address, service_name="test-writer") as client:
        ack = await client.produce("orders", b"over the backbone", to="mesh2.broker")
    assert ack["broker"] == b2.name and ack["via"] == b1.name and ack["offset"] == 0
    # Nobody subscribed to another mesh's gossip: the gateway's directory is its own mesh, and
    # mesh2's members are fetched on demand (what a console shows of other meshes).
    assert directory_names(gw1) == {b1.name, gw1.name}
    members = control.request_sync(gw1.control_path, "backbone", members=True)["entries"]
    assert {e["name"] for e in members} == {b2.name, gw2.name}

    def cached_rows():
        return control.request_sync(gw2.control_path, "backbone", members="cached")["entries"]

    rows = wait_until(cached_rows, 10, "mesh2's gateway to fetch mesh1's members in the background")
    assert {e["name"] for e in rows} == {b1.name, gw1.name} and all(e["mesh"] == "mesh1" for e in rows)

    expected = {("test-writer", "produce orders"), (b1.name, "produce"), (b1.name, "resolve mesh2.broker"),
                (gw1.name, "gateway.lookup mesh2.broker"), (gw1.name, "lookup mesh2.broker"),
                (gw1.name, "fetch members mesh2"), (gw2.name, "gateway.members mesh2"),
                (b1.name, "send orders"), (b2.name, "receive orders")}
    trace = receiver.store.wait_for(lambda spans: trace_of(spans, "produce orders", expected), timeout=10,
                                    description="the cross-mesh produce trace with its backbone lookup")
    root = assert_stitched(trace).root
    assert root.service_name == "test-writer"
    by_name = {(s.service_name, s.name): s for s in trace}
    resolve, send = by_name[(b1.name, "resolve mesh2.broker")], by_name[(b1.name, "send orders")]
    lookup = by_name[(gw1.name, "gateway.lookup mesh2.broker")]
    assert resolve.attributes["resolve.via"] == "backbone"
    assert lookup.kind == "SERVER" and resolve.parent_span_id == by_name[(b1.name, "produce")].span_id
    assert resolve.end_ns <= send.start_ns  # the lookup is done before the record goes, directly
    assert by_name[(b2.name, "receive orders")].parent_span_id == send.span_id

    # A second produce is answered from the gateway's cache: no fetch in its trace.
    async with await FabricClient.connect(b1.address, service_name="test-writer") as client:
        await client.produce("orders", b"cached", to="mesh2.broker")
    cached = {("test-writer", "produce orders"), (b1.name, "produce"), (b1.name, "resolve mesh2.broker"),
              (gw1.name, "gateway.lookup mesh2.broker"), (gw1.name, "lookup mesh2.broker"),
              (b1.name, "send orders"), (b2.name, "receive orders")}
    trace = receiver.store.wait_for(lambda spans: trace_of(spans, "produce orders", cached, nth=1) if len(
        [s for s in spans if s.name == "produce orders"]) >= 2 else None, timeout=10, description="a second trace")
    assert_stitched(trace)
    lookup = next(s for s in trace if s.name == "lookup mesh2.broker")
    assert lookup.attributes["backbone.cache_hit"] is True
    assert not [s for s in trace if s.name.startswith("fetch members")]


@pytest.mark.asyncio
async def test_a_cross_mesh_target_the_backbone_does_not_know_is_a_clear_error(spawn):
    b1 = spawn("mesh1", "broker")
    gw1 = spawn("mesh1", "gateway", [b1.address])
    wait_until(lambda: gw1.name in directory_names(b1), 10, "the broker to know its gateway")
    async with await FabricClient.connect(b1.address) as client:
        with pytest.raises(FabricError, match="mesh 'mesh7' has no live gateway on the backbone"):
            await client.produce("t", b"v", to="mesh7.broker")


@pytest.mark.asyncio
async def test_killing_one_of_two_gateways_mid_stream_loses_no_acknowledged_record(spawn, receiver, env_to_receiver):
    b1, b2 = spawn("mesh1", "broker"), spawn("mesh2", "broker")
    gw_a = spawn("mesh1", "gateway", [b1.address])
    gw_b = spawn("mesh1", "gateway", [b1.address])  # finds the backbone through gw_a's digest
    gw2 = spawn("mesh2", "gateway", [b2.address], extra=["--backbone-peer", gw_a.address])
    for gw in (gw_a, gw_b):
        wait_until(lambda: sees(gw, "mesh2", broker=1, gateway=1), 10, f"{gw.name} to see mesh2")
    wait_until(lambda: sees(gw2, "mesh1", broker=1, gateway=2), 10, "mesh2's gateway to see both of mesh1's")
    wait_until(lambda: {gw_a.name, gw_b.name} <= directory_names(b1), 10, "the writer to know both gateways")

    acked: list[str] = []
    failed = 0
    async with await FabricClient.connect(b1.address, service_name="test-writer") as client:
        for i in range(60):
            if i == 20:
                gw_a.kill()
            value = f"record {i}"
            try:
                ack = await client.produce("stream", value, to="mesh2.broker")
            except FabricError:
                failed += 1
                continue
            assert ack["broker"] == b2.name
            acked.append(value)
        await asyncio.sleep(0)
        fetched = await client.fetch("stream", from_=b2.name, max_records=1000)
    values = [r["value"].decode() for r in fetched["records"]]
    assert len(acked) >= 55, f"{failed} produces failed: the second gateway should have taken over"
    assert all(values.count(v) == 1 for v in acked), "an acknowledged record is missing or duplicated"
    assert set(values) <= {f"record {i}" for i in range(60)}

    # The backbone dropped the dead gateway, and mesh1's summary says one gateway now.
    wait_until(lambda: sees(gw2, "mesh1", gateway=1), 15, "mesh2's gateway to see mesh1 with one gateway")
    # A produce after the kill stitches, its lookup answered by the surviving gateway.
    expected = {("test-writer", "produce stream"), (b1.name, "produce"), (b1.name, "resolve mesh2.broker"),
                (gw_b.name, "gateway.lookup mesh2.broker"), (gw_b.name, "lookup mesh2.broker"),
                (b1.name, "send stream"), (b2.name, "receive stream")}
    trace = receiver.store.wait_for(lambda spans: trace_of(spans, "produce stream", expected), timeout=10,
                                    description="the last produce's trace, through the surviving gateway")
    assert_stitched(trace)


@pytest.mark.asyncio
async def test_cross_mesh_targets_by_id_prefix_resolve_through_the_backbone(spawn):
    """``mesh2.<id prefix>`` and ``mesh2.broker.<hex>`` resolve like ``mesh2.broker``: from a
    backbone member's own seat, and from a node that asks its gateway."""
    b1, b2 = spawn("mesh1", "broker"), spawn("mesh2", "broker")
    gw1 = spawn("mesh1", "gateway", [b1.address])
    gw2 = spawn("mesh2", "gateway", [b2.address], extra=[*FAST_GOSSIP, "--backbone-peer", gw1.address])
    wait_until(lambda: sees(gw1, "mesh2", broker=1, gateway=1), 10, "mesh1's gateway to see mesh2's summary")
    wait_until(lambda: gw1.name in directory_names(b1), 10, "the writer to know its gateway")
    b2_id, gw2_id = b2.address.split("@")[0], gw2.address.split("@")[0]
    targets = {f"mesh2.{b2_id[:4]}": b2.name, f"mesh2.{b2_id[:16]}": b2.name, b2.name: b2.name,
               f"mesh2.broker.{b2_id[:10]}": b2.name, f"mesh2.{gw2_id[:8]}": gw2.name}
    nobody = "mesh2." + next(p for p in ("ffff", "0000") if not b2_id.startswith(p) and not gw2_id.startswith(p))
    for via in (gw1, b1):  # a backbone member resolves in its seat; a broker asks its gateway
        async with await FabricClient.connect(via.address) as client:
            for target, name in targets.items():
                entry = await client.resolve(target)
                assert (entry["name"], entry["mesh"]) == (name, "mesh2"), (via.name, target)
            ack = await client.produce("by-prefix", b"x", to=f"mesh2.{b2_id[:6]}")
            assert ack["broker"] == b2.name
            with pytest.raises(FabricError, match=rf"no live node answers to '{nobody}'.*<mesh>\.<prefix>"):
                await client.resolve(nobody)
            with pytest.raises(FabricError, match=r"<mesh>\.<prefix>"):  # a bare prefix names no mesh
                await client.resolve(b2_id[:8])
            with pytest.raises(FabricError, match="is a gateway, not a broker"):
                await client.produce("by-prefix", b"x", to=f"mesh2.{gw2_id[:6]}")
    async with await FabricClient.connect(b1.address) as client:
        fetched = await client.fetch("by-prefix", from_=f"mesh2.broker.{b2_id[:8]}")
    assert [r["value"] for r in fetched["records"]] == [b"x", b"x"]
