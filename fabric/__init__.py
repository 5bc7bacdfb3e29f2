"""meshfabric's runtime: self-named nodes on iroh, a gossiped directory, brokers and gateways.

The public surface is what this module exports; everything else is an implementation detail.
"""

import os as _os

# iroh's Rust errors capture a backtrace when RUST_BACKTRACE is set, which turns every failed
# signature check into ~50 ms of work: a flood of forged digests would be 300x dearer to
# reject. Library backtraces off (panics still get theirs) unless the user asked otherwise.
_os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

from .client import FabricClient  # noqa: E402
from .directory import Directory, Entry, State  # noqa: E402
from .errors import (ConfigError, ControlError, DigestError, FabricError, ForgedDigest,  # noqa: E402
                     FrameError, FrameTooLarge, IdentityError, PeerTimeout, RemoteError, ResolveError,
                     TransportError)
from .gossip.proto import GossipConfig  # noqa: E402
from .identity import NODE_TYPES, Identity, load_or_mint, node_name  # noqa: E402
from .launcher import NodeProcess, NodeStartError  # noqa: E402
from .node import BOOT_STEPS, Node  # noqa: E402
from .node_config import NodeConfig  # noqa: E402

__all__ = [
    "BOOT_STEPS", "NODE_TYPES", "ConfigError", "ControlError", "DigestError", "Directory", "Entry",
    "FabricClient", "FabricError", "ForgedDigest", "FrameError", "FrameTooLarge", "GossipConfig",
    "Identity", "IdentityError", "Node", "NodeConfig", "NodeProcess", "NodeStartError", "PeerTimeout",
    "RemoteError", "ResolveError", "State", "TransportError", "load_or_mint", "node_name",
]
