"""A node's identity: its iroh secret key, persisted to a file, and the name it derives.

Identity is the name: a node calls itself ``<mesh>.<type>.<first 6 hex of its public key>``,
so nobody hands out names and a friendly name can be matched to the real id by eye.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import iroh

from .errors import ConfigError, IdentityError

NODE_TYPES: tuple[str, ...] = ("broker", "gateway", "registry", "compute", "console")
"""Every kind of node the fabric knows."""

_MESH_LABEL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_KEY_SIZE = 32


def is_mesh_label(text: object) -> bool:
    """True if ``text`` is a well-formed mesh label."""
    return isinstance(text, str) and _MESH_LABEL.fullmatch(text) is not None


def check_mesh_label(mesh: str | None) -> str:
    """Return ``mesh`` if it is a usable mesh label, else raise ``ConfigError``.

    A label is lower-case letters, digits, ``-`` and ``_`` (no dots: a dot separates
    the parts of a node name).
    """
    if not mesh:
        raise ConfigError(
            "a node needs a mesh label: pass --mesh NAME (for example --mesh mesh1) "
            "or set MESHFABRIC_MESH"
        )
    if not _MESH_LABEL.fullmatch(mesh):
        raise ConfigError(
            f"invalid mesh label {mesh!r} (given with --mesh, --watch-mesh or MESHFABRIC_MESH): "
            "use 1-63 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit (for example --mesh mesh1)"
        )
    return mesh


def check_node_type(node_type: str | None) -> str:
    """Return ``node_type`` if it is one of ``NODE_TYPES``, else raise ``ConfigError``."""
    if node_type not in NODE_TYPES:
        raise ConfigError(
            f"unknown node type {node_type!r}: choose one of {', '.join(NODE_TYPES)}"
        )
    return node_type


def node_name(mesh: str, node_type: str, node_id: str) -> str:
    """The self-derived name ``<mesh>.<type>.<first 6 hex of node_id>``."""
    return f"{mesh}.{node_type}.{node_id[:6]}"


@dataclass(frozen=True)
class Identity:
    """A loaded secret key and the public id it proves."""

    secret_key: bytes
    path: Path | None

    @cached_property
    def _key(self) -> iroh.SecretKey:
        return iroh.SecretKey.from_bytes(self.secret_key)

    @cached_property
    def node_id(self) -> str:
        """The ed25519 public key as 64 lower-case hex characters."""
        return str(self._key.public())

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` with this identity's key (64-byte ed25519 signature)."""
        return self._key.sign(message).to_bytes()

    def adopt(self, endpoint: iroh.Endpoint) -> None:
        """Take the key object and the id from ``endpoint``, bound with this key, unless known
        already: two calls into the bindings instead of parsing the key (~24 vs ~47 µs)."""
        known = self.__dict__  # where ``cached_property`` keeps them (the dataclass is frozen)
        if "node_id" not in known:
            known["node_id"] = str(endpoint.id())
        if "_key" not in known:
            known["_key"] = endpoint.secret_key()

    @classmethod
    def generate(cls) -> "Identity":
        """A fresh identity that lives only in memory."""
        return cls(iroh.SecretKey.generate().to_bytes(), None)


def verify_signature(node_id: str, message: bytes, signature: bytes) -> bool:
    """Check an ed25519 signature by ``node_id`` (the iroh public key) over ``message``."""
    try:
        iroh.EndpointId.from_string(node_id).verify(message, iroh.Signature.from_bytes(signature))
    except iroh.IrohError:
        return False
    return True


def load_or_mint(path: str | os.PathLike[str]) -> Identity:
    """Load the identity at ``path``, or mint one and persist it there with mode 0600.

    A file that exists but is unreadable or not a 32-byte key raises ``IdentityError``:
    an identity is never silently replaced, since that would rename the node.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)  # not ``read_bytes``: a boot pays for every µs
        try:
            data = os.read(fd, _KEY_SIZE + 1)  # one byte more tells a longer file apart
            size = len(data) if len(data) == _KEY_SIZE else os.fstat(fd).st_size
        finally:
            os.close(fd)
    except FileNotFoundError:
        return _mint(path)
    except OSError as exc:
        raise IdentityError(f"cannot read identity file {path}: {exc.strerror}") from exc
    if size != _KEY_SIZE:
        raise IdentityError(
            f"identity file {path} is corrupt: expected a {_KEY_SIZE}-byte secret key, "
            f"found {size} bytes. Restore it from a backup, or delete it to mint a "
            "new identity (the node will get a new name)."
        )
    return Identity(data, path)


def _mint(path: Path) -> Identity:
    key = iroh.SecretKey.generate().to_bytes()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: if two processes race to mint, the loser fails instead of overwriting.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
    except FileExistsError:
        return load_or_mint(path)
    except OSError as exc:
        raise IdentityError(f"cannot create identity file {path}: {exc.strerror}") from exc
    return Identity(key, path)
