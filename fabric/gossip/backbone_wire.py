"""The backbone's messages and how they travel as frames (the gossip frame kinds, with
fields of their own). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from ..errors import FrameError
from ..frames import Frame, Kind
from .members import VectorEntry


@dataclass(frozen=True)
class Rumors:
    """One-way: records and claims the sender found to be news."""

    topic: bytes
    records: tuple[bytes, ...] = ()
    claims: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Probe:
    """A request: "are you there, and do we agree?" (``state_hash``, plus the prober's own
    record), or, after a disagreement, "send me these records" (``want``: node ids)."""

    topic: bytes
    state_hash: bytes
    records: tuple[bytes, ...] = ()
    want: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class ProbeReply:
    """The answer: the responder's hash, the wanted records, and its state vector if the
    hashes differed."""

    topic: bytes
    state_hash: bytes
    records: tuple[bytes, ...] = ()
    claims: tuple[bytes, ...] = ()
    vector: tuple[VectorEntry, ...] | None = None


@dataclass(frozen=True)
class ProbeRequest:
    """One-way (SWIM's ping-req): "I cannot reach ``target`` (a 32-byte node id): probe it
    for me"."""

    topic: bytes
    target: bytes


@dataclass(frozen=True)
class ProbeAck:
    """One-way, the answer to a ``ProbeRequest``: "``target`` answered my probe"."""

    topic: bytes
    target: bytes


BackboneMessage = Union[Rumors, Probe, ProbeReply, ProbeRequest, ProbeAck]


def _byte_list(body: dict[str, Any], key: str) -> tuple[bytes, ...]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
        raise FrameError(f"backbone frame field {key!r} must be a list of byte strings")
    return tuple(value)


def _node_id(value: Any, key: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise FrameError(f"backbone frame field {key!r} must be a 32-byte node id")
    return value


def _vector(value: Any) -> tuple[VectorEntry, ...] | None:
    if value is None:
        return None
    ok = isinstance(value, list) and all(
        isinstance(e, list) and len(e) == 4 and isinstance(e[0], bytes) and len(e[0]) == 32
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in e[1:]) for e in value)
    if not ok:
        raise FrameError("backbone 'vector' must be a list of [32-byte id, incarnation, version, status]")
    return tuple((e[0], e[1], e[2], e[3]) for e in value)


class BackboneWire:
    """How backbone messages travel: the gossip frame kinds, with fields of their own. The
    indirect probe messages are one-way push frames with ``probe_for`` or ``alive`` (a node
    id) instead of records (a node that predates them sees an empty push)."""

    def encode(self, message: BackboneMessage) -> Frame:
        if isinstance(message, ProbeRequest):
            return Frame(Kind.GOSSIP_PUSH, {"topic": message.topic, "digests": [], "probe_for": message.target})
        if isinstance(message, ProbeAck):
            return Frame(Kind.GOSSIP_PUSH, {"topic": message.topic, "digests": [], "alive": message.target})
        body: dict[str, Any] = {"topic": message.topic, "digests": list(message.records)}
        if isinstance(message, Rumors):
            return Frame(Kind.GOSSIP_PUSH, {**body, "claims": list(message.claims)})
        if isinstance(message, Probe):
            return Frame(Kind.GOSSIP_PULL, {**body, "hash": message.state_hash, "want": list(message.want)})
        vector = None if message.vector is None else [list(e) for e in message.vector]
        return Frame(Kind.GOSSIP_PULL_REPLY, {**body, "hash": message.state_hash,
                                              "claims": list(message.claims), "vector": vector})

    def decode(self, frame: Frame) -> BackboneMessage:
        body = frame.body
        topic, records = body.get("topic"), _byte_list(body, "digests")
        if not isinstance(topic, bytes) or len(topic) != 32:
            raise FrameError("gossip frame needs a 32-byte 'topic'")
        if frame.kind is Kind.GOSSIP_PUSH:
            indirect = [key for key in ("probe_for", "alive") if key in body]
            if len(indirect) > 1 or (indirect and (records or body.get("claims"))):
                raise FrameError("a backbone push carries records and claims, or one of 'probe_for' and 'alive'")
            if indirect == ["probe_for"]:
                return ProbeRequest(topic, _node_id(body["probe_for"], "probe_for"))
            if indirect == ["alive"]:
                return ProbeAck(topic, _node_id(body["alive"], "alive"))
            return Rumors(topic, records, _byte_list(body, "claims"))
        state_hash = body.get("hash")
        if not isinstance(state_hash, bytes):
            raise FrameError("backbone probe frames need a 'hash' of bytes")
        if frame.kind is Kind.GOSSIP_PULL:
            return Probe(topic, state_hash, records, _byte_list(body, "want"))
        if frame.kind is Kind.GOSSIP_PULL_REPLY:
            return ProbeReply(topic, state_hash, records, _byte_list(body, "claims"), _vector(body.get("vector")))
        raise FrameError(f"{frame.kind.name} is not a gossip frame")

    def is_request(self, message: BackboneMessage) -> bool:
        return isinstance(message, Probe)


WIRE = BackboneWire()
