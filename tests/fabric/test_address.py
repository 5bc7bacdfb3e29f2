"""Peer addresses: ``<node id>@<ip:port>[,...]``, as ``--bootstrap`` takes them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.address import format_peer, parse_peer
from fabric.errors import ConfigError
from fabric.gossip.proto import Peer
from fabric.identity import Identity

NODE_ID = Identity.generate().node_id
EXPECTED_FORMAT = "<64-hex node id>@<ip:port>"


@pytest.mark.parametrize(
    "addrs",
    [
        ("127.0.0.1:4242",),
        ("127.0.0.1:1", "10.0.0.2:65535"),
        ("[::1]:4242",),
        ("192.168.1.10:5000", "[fe80::1]:5001", "[::ffff:10.0.0.1]:7"),
    ],
)
def test_format_then_parse_round_trips(addrs):
    text = format_peer(NODE_ID, addrs)
    assert text == f"{NODE_ID}@{','.join(addrs)}"
    assert parse_peer(text) == Peer(NODE_ID, addrs)


def test_parse_then_format_round_trips():
    text = f"{NODE_ID}@127.0.0.1:9000,[::1]:9001"
    peer = parse_peer(text)
    assert format_peer(peer.node_id, peer.addrs) == text


def test_parse_lower_cases_the_id_and_strips_whitespace():
    peer = parse_peer(f"  {NODE_ID.upper()}@127.0.0.1:9000\n")
    assert peer.node_id == NODE_ID
    assert peer.addrs == ("127.0.0.1:9000",)


def test_parse_ignores_empty_items_between_commas():
    assert parse_peer(f"{NODE_ID}@127.0.0.1:1,,127.0.0.1:2,").addrs == ("127.0.0.1:1", "127.0.0.1:2")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nonsense",
        NODE_ID,  # no @
        f"{NODE_ID}127.0.0.1:4242",  # no @
        f"{NODE_ID[:63]}@127.0.0.1:4242",  # short id
        f"{NODE_ID}0@127.0.0.1:4242",  # long id
        f"{'g' * 64}@127.0.0.1:4242",  # not hex
        f"{NODE_ID[:62]}-x@127.0.0.1:4242",
        "@127.0.0.1:4242",
    ],
)
def test_bad_node_id_part_raises_config_error_with_the_format(text):
    with pytest.raises(ConfigError) as info:
        parse_peer(text)
    message = str(info.value)
    assert repr(text) in message
    assert EXPECTED_FORMAT in message


@pytest.mark.parametrize(
    "addr_part",
    [
        "",  # empty addrs
        ",",
        "localhost:4242",  # a host name, not an ip
        "127.0.0.1",  # no port
        "127.0.0.1:",
        ":4242",
        "127.0.0.1:port",
        "127.0.0.1:123456",
        "127.0.0.1:70000",  # port out of range
        "127.0.0.1:0",
        "999.1.1.1:4242",  # not an ip
        "1.2.3:4242",
        "::1:4242",  # ipv6 without brackets
        "[::1]",
        "[zz::1]:4242",
        "[:::::]:4242",
        "127.0.0.1:4242\n",  # a newline inside the list
        "127.0.0.1:4242 ,127.0.0.1:1",
        "127.0.0.1:4242,nope",
    ],
)
def test_bad_addresses_raise_config_error_with_the_format(addr_part):
    text = f"{NODE_ID}@{addr_part}" if "\n" not in addr_part else f"{NODE_ID}@{addr_part},127.0.0.1:1"
    with pytest.raises(ConfigError) as info:
        parse_peer(text)
    message = str(info.value)
    assert repr(text) in message
    assert "ip:port" in message
    assert EXPECTED_FORMAT in message


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=120))
def test_parse_arbitrary_text_only_raises_config_error(text):
    try:
        peer = parse_peer(text)
    except ConfigError:
        return
    assert len(peer.node_id) == 64 and peer.addrs


@settings(max_examples=200, deadline=None)
@given(
    ips=st.lists(st.ip_addresses(), min_size=1, max_size=4),
    ports=st.lists(st.integers(1, 65535), min_size=4, max_size=4),
)
def test_every_real_ip_and_port_round_trips(ips, ports):
    addrs = tuple(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}" for ip, port in zip(ips, ports))
    assert parse_peer(format_peer(NODE_ID, addrs)) == Peer(NODE_ID, addrs)
