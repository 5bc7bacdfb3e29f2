"""Testing a two-mesh fabric with the meshfabric plugin: run as `pytest --mesh-count 2`.

Uses only the plugin's documented fixtures (fabric, fabric_client, fabric_client_sync, spans)
and its public API (assert_stitched); docs/testing.md shows this file.
"""

import pytest

from pytest_meshfabric import assert_stitched

# The trace of a cross-mesh produce, as data: a client's PRODUCER span, mesh1's gateway
# resolving mesh2's broker and sending to it, and the broker receiving it (its append and
# fsync inside that span).
CROSS_MESH_PRODUCE = {
    "name": "produce orders", "service": "client.*", "kind": "PRODUCER",
    "children": [{
        "name": "produce", "service": "mesh1.gateway.*", "kind": "SERVER",
        "children": [
            {"name": "resolve mesh2.broker"},
            {"name": "send orders", "kind": "PRODUCER", "children": [
                {"name": "receive orders", "service": "mesh2.broker.*", "kind": "CONSUMER",
                 "attributes": {"messaging.destination.name": "orders", "log.fsync": True}},
            ]},
        ],
    }],
}


def test_two_meshes_are_up_and_the_gateway_sees_both(fabric):
    assert list(fabric.meshes) == ["mesh1", "mesh2"]
    assert [n.type for n in fabric["mesh2"]] == ["broker", "gateway", "registry", "compute"]
    gateway = fabric["mesh1"]["gateway"]
    assert gateway.directory_names() == fabric["mesh1"].names | fabric["mesh2"].names


@pytest.mark.asyncio
async def test_a_cross_mesh_produce_is_one_stitched_trace(fabric, fabric_client, spans):
    ack = await fabric_client.produce("orders", b"hello", to="mesh2.broker")
    assert ack["broker"] == fabric["mesh2"]["broker"].name

    # Every process exports on its own schedule: wait until the whole trace is in.
    trace = await spans.await_trace(root="produce orders", until=CROSS_MESH_PRODUCE)
    assert_stitched(trace, meshes=["mesh1", "mesh2"],
                    services=["client.*", "mesh1.gateway.*", "mesh2.broker.*"])
    assert trace == CROSS_MESH_PRODUCE


def test_sync_tests_produce_and_fetch_too(fabric, fabric_client_sync, spans):
    ack = fabric_client_sync.produce("orders", "from a sync test", to="mesh2.broker")
    batch = fabric_client_sync.fetch("orders", offset=ack["offset"], from_=fabric["mesh2"]["broker"].name)
    assert batch["records"][0]["value"] == b"from a sync test"
    trace = spans.wait_for_trace(root="produce orders", until=CROSS_MESH_PRODUCE)
    assert trace.one(name="receive orders").service_name == fabric["mesh2"]["broker"].name
