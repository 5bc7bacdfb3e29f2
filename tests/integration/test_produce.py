"""Produce on real processes: a cross-mesh produce is one stitched trace; acked records survive kill -9."""

from __future__ import annotations

import asyncio

import pytest

from fabric import rpc
from fabric.client import FabricClient
from fabric.errors import RemoteError
from fabric.identity import Identity
from fabric.services.broker import ALPN as BROKER_ALPN
from fabric.transport import Transport
from pytest_meshfabric import assert_stitched
from tests.integration.conftest import directory_names, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def fabric2(spawn):
    """mesh1 (broker, registry, gateway watching mesh2) and mesh2 (broker, registry)."""
    b1 = spawn("mesh1", "broker")
    b2 = spawn("mesh2", "broker")
    nodes = {
        "b1": b1, "b2": b2,
        "r1": spawn("mesh1", "registry", [b1.address]),
        "r2": spawn("mesh2", "registry", [b2.address]),
        "gw": spawn("mesh1", "gateway", [b1.address, b2.address], watch=["mesh2"]),
    }
    wait_until(lambda: b2.name in directory_names(nodes["gw"]), 10, "the gateway to see mesh2's broker")
    return nodes


@pytest.mark.asyncio
async def test_cross_mesh_produce_is_one_stitched_trace(fabric2, receiver, monkeypatch):
    gw, b2 = fabric2["gw"], fabric2["b2"]
    for key, value in receiver.env("http/protobuf", bsp_schedule_delay_ms=100).items():
        monkeypatch.setenv(key, value)
    async with await FabricClient.connect(gw.address, service_name="test-writer") as client:
        ack = await client.produce("orders", b"cross-mesh hello", to="mesh2.broker")
    assert ack["broker"] == b2.name and ack["broker_mesh"] == "mesh2" and ack["offset"] == 0

    expected = {("test-writer", "produce orders"), (gw.name, "produce"), (gw.name, "resolve mesh2.broker"),
                (gw.name, "send orders"), (b2.name, "receive orders")}

    def whole_trace(spans):
        roots = [s for s in spans if s.name == "produce orders" and s.service_name == "test-writer"]
        if not roots:
            return None
        trace = [s for s in spans if s.trace_id == roots[0].trace_id]
        return trace if expected <= {(s.service_name, s.name) for s in trace} else None

    # Each process exports on its own schedule: wait until every expected span is in.
    trace = receiver.store.wait_for(whole_trace, timeout=10, description="the cross-mesh produce trace")
    root = assert_stitched(trace).root
    assert root.kind == "PRODUCER" and root.service_name == "test-writer"
    send = next(s for s in trace if s.name == "send orders")
    receive = next(s for s in trace if s.name == "receive orders")
    assert send.kind == "PRODUCER" and receive.kind == "CONSUMER"
    assert receive.parent_span_id == send.span_id
    assert receive.attributes["messaging.destination.name"] == "orders"
    assert receive.attributes["messaging.system"] == "meshfabric"
    # the append and its commit are the receive span's own: it ends once the record is durable
    assert receive.attributes["log.fsync"] is True and receive.attributes["meshfabric.offset"] == 0
    assert not [s for s in trace if s.parent_span_id == receive.span_id]
    assert {s.attributes.get("mesh.id") for s in trace if s.service_name != "test-writer"} == {"mesh1", "mesh2"}


@pytest.mark.asyncio
async def test_acknowledged_records_survive_kill_9_and_retries_are_stored_once(spawn):
    broker = spawn("mesh1", "broker")
    gw = spawn("mesh1", "gateway", [broker.address])
    wait_until(lambda: broker.name in directory_names(gw), 10, "the gateway to see the broker")
    async with await FabricClient.connect(gw.address) as client:
        acks = [await client.produce("durable", f"record {i}", to=broker.name) for i in range(25)]
    assert [a["offset"] for a in acks] == list(range(25))

    broker.kill()
    restarted = spawn("mesh1", "broker", data_dir=broker.data_dir)
    assert restarted.name == broker.name
    async with await FabricClient.connect(restarted.address) as client:
        batch = await client.fetch("durable", from_=restarted.name, max_records=100)
    values = [r["value"] for r in batch["records"]]
    assert values == [f"record {i}".encode() for i in range(25)]
    assert batch["end_offset"] == 25


@pytest.mark.asyncio
async def test_a_produce_to_a_broker_that_just_died_fails_with_the_reason(spawn):
    """Not after every retry has timed out against the dead process: the attempt in flight
    fails when the gateway suspects the broker, one more attempt (which a restarted process
    would answer) times out, and the error says why."""
    broker = spawn("mesh1", "broker")
    gw = spawn("mesh1", "gateway", [broker.address])
    wait_until(lambda: broker.name in directory_names(gw), 10, "the gateway to see the broker")
    async with await FabricClient.connect(gw.address) as client:
        await client.produce("t", b"before", to=broker.name)
        broker.kill()
        with pytest.raises(RemoteError, match=f"produce to {broker.name} failed: the broker is "
                                              r"(suspected down|gone from the directory) \(.*\); the record may or may not be stored") as info:
            await client.produce("t", b"after", to=broker.name)
    assert info.value.code == "unreachable"


@pytest.mark.asyncio
async def test_a_gateway_gives_up_on_a_dead_broker_when_its_client_does_and_says_why(spawn, receiver):
    """The client's timeout travels with its request: the gateway's attempts share what is
    left of it (less a tenth for the answer), so the client hears the gateway's reason, not
    its own timeout, and the gateway's send span has ended, in error, by then (its own
    budget, 5 s, would outlast the client's 2 s)."""
    broker = spawn("mesh1", "broker")
    gw = spawn("mesh1", "gateway", [broker.address])
    wait_until(lambda: broker.name in directory_names(gw), 10, "the gateway to see the broker")
    async with await FabricClient.connect(gw.address, service_name="impatient", timeout=2.0) as client:
        await client.produce("t", b"before", to=broker.name)
        broker.kill()
        with pytest.raises(RemoteError, match=f"produce to {broker.name} failed") as info:
            await client.produce("t", b"after", to=broker.name)
    assert info.value.code == "unreachable"

    def the_failed_send(spans: list) -> list:
        return [s for s in spans if s.name == "send t" and s.service_name == gw.name and s.status == "ERROR"]

    (send,) = receiver.store.wait_for(the_failed_send, timeout=10, description="the gateway's failed send span")
    assert (send.end_ns - send.start_ns) / 1e9 < 2.0


@pytest.mark.asyncio
async def test_a_retried_produce_is_stored_once(spawn):
    broker = spawn("mesh1", "broker")
    node_id, _, addrs = broker.address.partition("@")
    transport = await Transport.bind(Identity.generate())
    try:
        args = {"topic": "retries", "value": b"once", "producer_id": "p-1", "seq": 7}
        first = await rpc.call(transport, node_id, addrs.split(","), BROKER_ALPN, "produce", args)
        again = await rpc.call(transport, node_id, addrs.split(","), BROKER_ALPN, "produce", args)
        other = await rpc.call(transport, node_id, addrs.split(","), BROKER_ALPN, "produce", {**args, "seq": 8})
    finally:
        await transport.close()
    assert (first["offset"], first["duplicate"]) == (0, False)
    assert (again["offset"], again["duplicate"]) == (0, True)
    assert (other["offset"], other["duplicate"]) == (1, False)


@pytest.mark.asyncio
async def test_bad_produce_requests_get_clear_errors_and_the_broker_keeps_serving(spawn):
    broker = spawn("mesh1", "broker", extra=["--max-record-bytes", "1000"])
    async with await FabricClient.connect(broker.address) as client:
        with pytest.raises(RemoteError, match="over this broker's 1000-byte limit"):
            await client.produce("big", b"x" * 1001, to=broker.name)
        with pytest.raises(RemoteError, match="no live node answers to 'mesh9.broker'") as info:
            await client.produce("t", b"v", to="mesh9.broker")
        assert info.value.code == "unknown_target"
        with pytest.raises(RemoteError, match="invalid topic name"):
            await client.produce("../etc/passwd", b"v", to=broker.name)
        ack = await client.produce("t", b"still serving", to=broker.name)
    assert ack["offset"] == 0
    assert broker.alive()


@pytest.mark.asyncio
async def test_registry_routes_by_topic_and_compute_continues_the_trace(spawn, receiver, monkeypatch):
    broker = spawn("mesh1", "broker", extra=["--topic", "words"])
    registry = spawn("mesh1", "registry", [broker.address])
    compute = spawn("mesh1", "compute", [broker.address],
                    extra=["--compute-from", "words", "--compute-to", "shouting"])
    for node in (registry, compute):
        wait_until(lambda: broker.name in directory_names(node), 10, f"{node.name} to see the broker")
    for key, value in receiver.env("http/protobuf", bsp_schedule_delay_ms=100).items():
        monkeypatch.setenv(key, value)
    async with await FabricClient.connect(registry.address, service_name="test-writer") as client:
        ack = await client.produce("words", b"hello there")  # no target: the registry knows the owner
        assert ack["broker"] == broker.name

        async def shouted():
            got = await client.fetch("shouting", from_=broker.name)
            return got["records"]

        deadline = asyncio.get_running_loop().time() + 10
        while not (records := await shouted()):
            assert asyncio.get_running_loop().time() < deadline, "compute never produced the transformed record"
            await asyncio.sleep(0.1)
    assert records[0]["value"] == b"HELLO THERE"

    expected = {("test-writer", "produce words"), (registry.name, "lookup words"), (broker.name, "receive words"),
                (compute.name, "process words"), (compute.name, "send shouting"), (broker.name, "receive shouting")}

    def multi_hop(spans):
        roots = [s for s in spans if s.name == "produce words" and s.service_name == "test-writer"]
        trace = [s for s in spans if roots and s.trace_id == roots[0].trace_id]
        return trace if expected <= {(s.service_name, s.name) for s in trace} else None

    trace = receiver.store.wait_for(multi_hop, timeout=10, description="the produce → compute → produce trace")
    assert_stitched(trace)
    process = next(s for s in trace if s.name == "process words")
    assert process.kind == "CONSUMER" and process.links, "the process span links to the producer's span"


@pytest.mark.asyncio
async def test_a_batch_is_stored_in_order_and_its_retry_once(spawn):
    broker = spawn("mesh1", "broker")
    async with await FabricClient.connect(broker.address) as client:
        ack = await client.produce_batch("batched", [f"b{i}" for i in range(50)], to=broker.name)
        assert ack["offsets"] == list(range(50)) and not any(ack["duplicates"])
        got = await client.fetch("batched", from_=broker.name, max_records=100)
    assert [r["value"] for r in got["records"]] == [f"b{i}".encode() for i in range(50)]

    node_id, _, addrs = broker.address.partition("@")
    transport = await Transport.bind(Identity.generate())
    try:
        args = {"topic": "retried", "records": [{"value": b"x"}, {"value": b"y"}], "producer_id": "p", "seq": 10}
        first = await rpc.call(transport, node_id, addrs.split(","), BROKER_ALPN, "produce_batch", args)
        again = await rpc.call(transport, node_id, addrs.split(","), BROKER_ALPN, "produce_batch", args)
        # bare values (what a node's producer sends), the batch's headers on each, one of them a retry
        bare = {"topic": "retried", "values": [b"y", b"z"], "headers": {"h": "1"}, "producer_id": "p", "seq": 11}
        mixed = await rpc.call(transport, node_id, addrs.split(","), BROKER_ALPN, "produce_batch", bare)
        for bad, message in (({"values": []}, "'values' must be a list of 1-"), ({"values": ["text"]}, "must be bytes"),
                             ({"values": [b"v" * (2 << 20)]}, "byte limit"), ({}, "'records' \\(or 'values'\\)")):
            with pytest.raises(RemoteError, match=message):
                await rpc.call(transport, node_id, addrs.split(","), BROKER_ALPN, "produce_batch",
                               {"topic": "retried", **bad})
        stored = await rpc.call(transport, node_id, addrs.split(","), BROKER_ALPN, "fetch", {"topic": "retried"})
    finally:
        await transport.close()
    assert first["offsets"] == again["offsets"] == [0, 1]
    assert again["duplicates"] == [True, True]
    assert mixed["offsets"] == [1, 2] and mixed["duplicates"] == [True, False]
    assert [(r["value"], r["headers"]) for r in stored["records"]] == [(b"x", {}), (b"y", {}), (b"z", {"h": "1"})]
