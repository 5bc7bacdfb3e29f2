"""A signed suspicion: "member X, at version v, did not answer my probe".

The backbone spreads these instead of everyone's heartbeats (see ``backbone.py``). A claim
is signed by the member that makes it, so only a backbone member can accuse another one, and
the accused refutes it by publishing its record at a higher version.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from ..errors import DigestError, ForgedDigest
from .digest import Signer, Verifier, message_id

MAX_CLAIM_BYTES = 512
_KIND = "suspect"


@dataclass(frozen=True)
class Claim:
    subject: str            # the suspected member's node id
    version: tuple[int, int]  # the subject's (incarnation, version) the claim is about
    claimant: str           # who makes the claim (and signed it)
    raw: bytes = b""

    @property
    def msg_id(self) -> bytes:
        return message_id(self.raw)


def make(subject: str, version: tuple[int, int], claimant: str, signer: Signer) -> Claim:
    body = msgpack.packb([_KIND, subject, version[0], version[1], claimant], use_bin_type=True)
    raw = msgpack.packb([body, signer(body)], use_bin_type=True)
    return Claim(subject, version, claimant, raw)


def decode(raw: bytes, verify: Verifier) -> Claim:
    """Decode and verify a claim, or raise ``DigestError`` (``ForgedDigest``) saying why not."""
    if not isinstance(raw, (bytes, bytearray)) or len(raw) > MAX_CLAIM_BYTES:
        raise DigestError(f"a claim must be at most {MAX_CLAIM_BYTES} bytes")
    try:
        body, signature = msgpack.unpackb(raw, raw=False)
        kind, subject, inc, ver, claimant = msgpack.unpackb(body, raw=False)
    except Exception as exc:
        raise DigestError(f"claim is not [body, signature] of 5 fields: {exc}") from None
    if kind != _KIND or not all(isinstance(v, str) and len(v) == 64 for v in (subject, claimant)):
        raise DigestError("claim must name a subject and a claimant by 64-hex node id")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64 for v in (inc, ver)):
        raise DigestError("claim version must be two unsigned ints")
    if not isinstance(signature, bytes) or not verify(claimant, body, signature):
        raise ForgedDigest(f"claim by {claimant[:6]} has a signature that does not verify: forged")
    return Claim(subject, (inc, ver), claimant, bytes(raw))
