"""The one error hierarchy of meshfabric.

Every error the runtime raises on purpose is a ``FabricError``; each message says
what went wrong and what to do about it::

    FabricError
    ├── ConfigError        a missing or invalid flag, label, type or setting
    ├── IdentityError      an identity (secret key) file that cannot be read or used
    ├── FrameError         bytes on the wire that are not a valid frame
    │   └── FrameTooLarge  a frame whose declared size exceeds the limit
    ├── DigestError        a gossip digest that is malformed
    │   └── ForgedDigest   a digest whose signature does not verify
    ├── TransportError     a peer that cannot be reached or a stream that broke
    │   └── PeerTimeout    a bounded connect or request ran out of time
    ├── ControlError       a failed request on a node's control socket
    ├── ResolveError       a name that no live node in the directory answers to
    └── RemoteError        a peer answered a request with an error (``code`` says which)
"""

from __future__ import annotations


class FabricError(Exception):
    """Base class of every error meshfabric raises on purpose."""


class ConfigError(FabricError):
    """A missing or invalid flag, mesh label, node type or setting."""


class IdentityError(FabricError):
    """An identity file that is unreadable, corrupt or of the wrong size."""


class FrameError(FabricError):
    """Bytes received from a peer that do not form a valid frame."""


class FrameTooLarge(FrameError):
    """A frame whose declared length is over the configured maximum."""


class DigestError(FabricError):
    """A gossip digest that cannot be decoded, or whose signature does not verify."""


class ForgedDigest(DigestError):
    """A gossip digest whose signature does not verify against the id it claims."""


class TransportError(FabricError):
    """A peer that cannot be reached, or a stream that failed mid-way."""


class PeerTimeout(TransportError):
    """A connect or request to a peer did not finish within its deadline."""


class ControlError(FabricError):
    """A request on a node's control socket failed."""


class ResolveError(FabricError):
    """No live node in the directory matches the requested name."""


class RemoteError(FabricError):
    """A peer answered a request with an error frame; ``code`` names the kind of failure."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
