"""The digest a node gossips about itself, signed with its own key.

A digest says who a node is and where to reach it. Its version is
``(incarnation, heartbeat)``: the incarnation is fixed per boot (milliseconds since the
epoch), the heartbeat counts up while it runs, so a restart always wins over the old process.
Only the node holding the key can produce a valid digest for its id, and the name must be the
one derived from that id, so no node can insert or change another node's entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import blake3
import msgpack

from ..errors import DigestError, ForgedDigest
from ..identity import NODE_TYPES, is_mesh_label, node_name

Verifier = Callable[[str, bytes, bytes], bool]
"""``verify(node_id_hex, message, signature) -> bool``."""

Signer = Callable[[bytes], bytes]
"""``sign(message) -> 64-byte signature`` with the node's own key."""

MAX_DIGEST_BYTES = 4096
_FIELDS = ("id", "name", "mesh", "type", "addrs", "inc", "hb", "leaving", "meta")


@dataclass(frozen=True)
class Digest:
    """What a node says about itself."""

    node_id: str
    mesh: str
    type: str
    addrs: tuple[str, ...]
    incarnation: int
    heartbeat: int
    leaving: bool = False
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        return node_name(self.mesh, self.type, self.node_id)

    @property
    def version(self) -> tuple[int, int]:
        return (self.incarnation, self.heartbeat)

    def body(self) -> bytes:
        """The canonical bytes that are signed."""
        return msgpack.packb(
            [self.node_id, self.name, self.mesh, self.type, list(self.addrs),
             self.incarnation, self.heartbeat, self.leaving, self.meta],
            use_bin_type=True,
        )


@dataclass(frozen=True)
class SignedDigest:
    """A digest with its signature, as it travels: ``raw`` is the exact wire bytes."""

    digest: Digest
    raw: bytes

    @property
    def msg_id(self) -> bytes:
        """16 bytes that identify this exact message, for dedup before verification."""
        return message_id(self.raw)


def message_id(raw: bytes) -> bytes:
    return blake3.blake3(raw).digest(16)


def sign(digest: Digest, signer: Signer) -> SignedDigest:
    body = digest.body()
    raw = msgpack.packb([body, signer(body)], use_bin_type=True)
    return SignedDigest(digest, raw)


def decode(raw: bytes, verify: Verifier) -> SignedDigest:
    """Decode and verify a signed digest, or raise ``DigestError`` saying why not."""
    if not isinstance(raw, (bytes, bytearray)):
        raise DigestError(f"a signed digest must be bytes, got {type(raw).__name__}")
    if len(raw) > MAX_DIGEST_BYTES:
        raise DigestError(f"digest is {len(raw)} bytes, over the {MAX_DIGEST_BYTES}-byte limit")
    try:
        body, signature = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        fields = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:
        raise DigestError(f"digest is not valid msgpack: {exc}") from None
    if not isinstance(body, bytes) or not isinstance(signature, bytes) or len(signature) != 64:
        raise DigestError("digest must be [body bytes, 64-byte signature]")
    if not isinstance(fields, list) or len(fields) != len(_FIELDS):
        raise DigestError(f"digest body must be a list of {len(_FIELDS)} fields")
    node_id, name, mesh, type_, addrs, inc, hb, leaving, meta = fields
    if not (isinstance(node_id, str) and _is_hex64(node_id)):
        raise DigestError("digest node id must be 64 lower-case hex characters")
    if not all(isinstance(v, str) for v in (name, mesh, type_)):
        raise DigestError("digest name, mesh and type must be strings")
    if not is_mesh_label(mesh):
        raise DigestError(f"digest has an invalid mesh label {mesh!r}")
    if type_ not in NODE_TYPES:
        raise DigestError(f"digest has unknown node type {type_!r}")
    if not (isinstance(addrs, list) and all(isinstance(a, str) for a in addrs)):
        raise DigestError("digest addresses must be a list of strings")
    if not (_is_uint(inc) and _is_uint(hb) and isinstance(leaving, bool) and isinstance(meta, dict)):
        raise DigestError("digest incarnation/heartbeat must be unsigned ints, leaving a bool, meta a map")
    digest = Digest(node_id, mesh, type_, tuple(addrs), inc, hb, leaving, meta)
    if name != digest.name:
        raise DigestError(f"digest name {name!r} does not match its id (expected {digest.name!r})")
    if not verify(node_id, body, signature):
        raise ForgedDigest(f"digest for {name} has a signature that does not verify: forged")
    return SignedDigest(digest, bytes(raw))


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _is_hex64(s: str) -> bool:
    return _HEX64.fullmatch(s) is not None


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63
