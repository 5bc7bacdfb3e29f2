"""What a node is told at its start (``NodeConfig``), checked as it is made: a bad label,
type, peer address or flag combination is a ``ConfigError`` before anything is bound."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import control
from .address import parse_peer
from .errors import ConfigError
from .gossip.proto import GossipConfig
from .identity import check_mesh_label, check_node_type
from .services.console import check_console_settings


@dataclass
class NodeConfig:
    """Everything a node needs to boot. ``mesh`` and ``type`` are checked at construction."""

    mesh: str
    type: str
    data_dir: Path
    identity_path: Path | None = None
    bind: str = "127.0.0.1:0"
    bootstrap: list[str] = field(default_factory=list)
    watch: list[str] = field(default_factory=list)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    # cross-mesh: "backbone" (gateways and consoles join it) or "watch" (only --watch-mesh)
    cross_mesh: str = "backbone"
    backbone_peers: list[str] = field(default_factory=list)
    # broker
    max_record_bytes: int = 1024 * 1024
    auto_create_topics: bool = True
    topics: list[str] = field(default_factory=list)
    # gateway: the simulated writer (off unless writer_to is set)
    writer_to: str | None = None
    writer_topic: str = "demo"
    writer_rate: float = 2.0
    # compute: consume one topic, produce the transformed records to another
    compute_from: str | None = None
    compute_to: str | None = None
    transform: str = "upper"
    compute_poll_interval: float = 0.2
    # console: its web server, where it forwards the spans it receives, the token for actions
    console_host: str = "127.0.0.1"
    console_port: int = 0
    otlp_forward: str | None = None
    console_token: str | None = None

    def __post_init__(self) -> None:
        self.mesh = check_mesh_label(self.mesh)
        self.type = check_node_type(self.type)
        for watched in self.watch:
            check_mesh_label(watched)
        if self.writer_rate <= 0:
            raise ConfigError("--writer-rate must be a positive number of records per second")
        if (self.compute_from is None) != (self.compute_to is None):
            raise ConfigError("--compute-from and --compute-to go together")
        check_console_settings(self)
        self.bootstrap_peers = [parse_peer(b) for b in self.bootstrap]
        if self.cross_mesh not in ("backbone", "watch"):
            raise ConfigError(f"--cross-mesh must be 'backbone' or 'watch', not {self.cross_mesh!r}")
        self.backbone_peer_list = [parse_peer(b) for b in self.backbone_peers]
        self.data_dir = Path(self.data_dir)
        if self.identity_path is None:
            self.identity_path = self.data_dir / "identity.key"
        if problem := control.socket_path_problem(self.control_path):
            raise ConfigError(f"the node's control socket cannot live in its data directory: {problem}. "
                              "Use a shorter --data-dir (a relative one counts as given)")

    @property
    def control_path(self) -> Path:
        return control.socket_path(self.data_dir)
