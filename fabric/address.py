"""How a node's reachable address is written: ``<node id>@<ip:port>[,<ip:port>...]``.

This is what ``--bootstrap`` takes and what a node prints when it is ready.
"""

from __future__ import annotations

import ipaddress
import re

from .errors import ConfigError
from .gossip.proto import Peer

_HOSTPORT = re.compile(r"(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):(\d{1,5})")
_FORMAT = "expected <64-hex node id>@<ip:port>[,<ip:port>...]"


def format_peer(node_id: str, addrs: list[str] | tuple[str, ...]) -> str:
    return f"{node_id}@{','.join(addrs)}"


def parse_peer(text: str) -> Peer:
    """Parse ``<64-hex node id>@<ip:port>[,...]`` into a ``Peer`` or raise ``ConfigError``."""
    node_id, sep, rest = text.strip().partition("@")
    if not sep or len(node_id) != 64 or any(c not in "0123456789abcdef" for c in node_id.lower()):
        raise ConfigError(
            f"bad peer address {text!r}: {_FORMAT}, "
            "as printed by a running node (meshfabric node ... prints it when ready)"
        )
    addrs = tuple(a for a in rest.split(",") if a)
    bad = [a for a in addrs if not _is_hostport(a)]
    if not addrs or bad:
        raise ConfigError(f"bad peer address {text!r}: {bad or 'no address'} is not ip:port; {_FORMAT}")
    return Peer(node_id.lower(), addrs)


def _is_hostport(text: str) -> bool:
    """``ip:port`` (``[ipv6]:port``) with a real IP address and a port in 1-65535."""
    m = _HOSTPORT.fullmatch(text)
    if m is None or not 0 < int(m.group(3)) < 65536:
        return False
    try:
        ipaddress.ip_address(m.group(1).strip("[]"))
    except ValueError:
        return False
    return True
