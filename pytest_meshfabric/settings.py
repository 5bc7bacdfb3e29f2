"""The plugin's settings: one table drives the command-line options, the ini names and their parsing.

Every setting is an ini value (``[pytest]`` / ``[tool.pytest.ini_options]``); most are also a
command-line option, which wins over the ini file. Bad values fail at start-up with a
message that names the option, the value and what would be accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from fabric import NODE_TYPES
from fabric.errors import ConfigError

from .backends import CHOICES as BACKEND_CHOICES
from .cluster import DEFAULT_TYPES, FAST_GOSSIP, ClusterSpec

SCOPES = ("session", "package", "module", "class", "function")
PROTOCOLS = ("http/protobuf", "grpc")


@dataclass(frozen=True)
class Setting:
    """One setting: its ini name, its option flag (if any), default and parser."""

    ini: str
    flag: str | None
    default: str
    help: str
    parse: Callable[[str], Any]
    is_bool: bool = False


def _positive(convert: Callable[[str], Any], what: str, unit: str) -> Callable[[str], Any]:
    """A parser of positive numbers of type ``convert`` (int: at least 1)."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise ConfigError(f"{what} must be {unit}, not {text!r}") from None
        if value <= 0:
            raise ConfigError(f"{what} must be {'at least 1' if convert is int else 'positive'}, not {value}")
        return value
    return parse


def _positive_int(what: str) -> Callable[[str], int]:
    return _positive(int, what, "a whole number")


def _positive_float(what: str) -> Callable[[str], float]:
    return _positive(float, what, "a number of seconds")


def _types(text: str) -> tuple[str, ...]:
    types = tuple(t.strip() for t in text.replace(" ", ",").split(",") if t.strip())
    ClusterSpec(types=types)  # validates, with a message listing the known types
    return types


def _choice(what: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ConfigError(f"{what} must be one of {', '.join(choices)}, not {text!r}")
        return text
    return parse


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    return text.strip().lower() in ("1", "true", "yes", "on")


SETTINGS = (
    Setting("fabric_mesh_count", "--mesh-count", "1", "meshes in the `fabric` cluster (default 1)",
            _positive_int("--mesh-count / fabric_mesh_count")),
    Setting("fabric_types", "--fabric-types", ",".join(DEFAULT_TYPES),
            f"node types per mesh, comma-separated, from {', '.join(NODE_TYPES)} "
            f"(default {','.join(DEFAULT_TYPES)}; gateways and consoles watch every other mesh)", _types),
    Setting("fabric_backend", "--fabric-backend", "auto",
            "where nodes run: netns (a network namespace per node; root), local (127.0.0.1), docker (a container per "
            "node; root and docker.io, or DOCKER_HOST), "
            "or auto (netns when possible, default)", _choice("--fabric-backend / fabric_backend", BACKEND_CHOICES)),
    Setting("fabric_keep", "--fabric-keep", "false",
            "leave a failing test's cluster running and print how to reach and remove it", _bool, is_bool=True),
    Setting("fabric_artifacts", "--fabric-artifacts", "",
            "where failing tests leave trace dumps and node logs (default <basetemp>/meshfabric-artifacts)", str),
    Setting("otlp_forward", "--otlp-forward", "",
            "also forward every captured span to this OTLP/HTTP traces URL (a collector or Jaeger)", str),
    Setting("trace_snapshot_update", "--trace-snapshot-update", "false",
            "(re)write the trace-shape snapshots instead of comparing against them", _bool, is_bool=True),
    Setting("fabric_scope", None, "session",
            f"scope of the `fabric` cluster: {', '.join(SCOPES)} (default session)",
            _choice("the ini value fabric_scope", SCOPES)),
    Setting("fabric_ready_timeout", None, "30",
            "seconds a cluster may take to be ready (boot traces in, directories converged)",
            _positive_float("fabric_ready_timeout")),
    Setting("fabric_log_lines", None, "15", "node log lines shown per node when a test fails",
            _positive_int("fabric_log_lines")),
    Setting("fabric_node_args", None, " ".join(FAST_GOSSIP),
            "extra `meshfabric node` arguments for every node (default: fast gossip timings)", str.split),
    Setting("fabric_otlp_protocol", None, "http/protobuf", "how nodes export spans: http/protobuf or grpc",
            _choice("fabric_otlp_protocol", PROTOCOLS)),
)


def _dest(setting: Setting) -> str:
    return setting.ini


def add_options(parser: pytest.Parser) -> None:
    """Register every setting as an ini value and, when it has a flag, an option."""
    group = parser.getgroup("meshfabric", "meshfabric clusters and traces")
    for s in SETTINGS:
        if s.flag:
            if s.is_bool:
                group.addoption(s.flag, action="store_true", default=None, dest=_dest(s), help=s.help)
            else:
                group.addoption(s.flag, default=None, dest=_dest(s), help=s.help)
        parser.addini(s.ini, s.help + (f" (ini of {s.flag})" if s.flag else ""), default=s.default)


@dataclass(frozen=True)
class FabricSettings:
    """The settings in effect, resolved from the command line, the ini file and the defaults."""

    mesh_count: int = 1
    types: tuple[str, ...] = DEFAULT_TYPES
    backend: str = "auto"
    keep: bool = False
    artifacts: Path | None = None
    otlp_forward: str | None = None
    snapshot_update: bool = False
    scope: str = "session"
    ready_timeout: float = 30.0
    log_lines: int = 15
    node_args: tuple[str, ...] = FAST_GOSSIP
    otlp_protocol: str = "http/protobuf"

    @classmethod
    def from_config(cls, config: pytest.Config) -> FabricSettings:
        """Resolve every setting; raises ``pytest.UsageError`` naming a bad value."""
        values: dict[str, Any] = {}
        for s in SETTINGS:
            raw = config.getoption(_dest(s), None) if s.flag else None
            from_cli = raw is not None
            if not from_cli:
                raw = config.getini(s.ini)
            try:
                values[s.ini] = s.parse(raw)
            except ConfigError as exc:
                where = f"option {s.flag}" if from_cli else f"ini value {s.ini}"
                raise pytest.UsageError(f"meshfabric: bad {where}: {exc}") from None
            if s.ini == "fabric_artifacts" and values[s.ini]:
                base = config.invocation_params.dir if from_cli else config.rootpath
                values[s.ini] = (base / values[s.ini]).resolve()
        return cls(
            mesh_count=values["fabric_mesh_count"], types=values["fabric_types"], backend=values["fabric_backend"],
            keep=values["fabric_keep"], artifacts=values["fabric_artifacts"] or None,
            otlp_forward=values["otlp_forward"] or None, snapshot_update=values["trace_snapshot_update"],
            scope=values["fabric_scope"], ready_timeout=values["fabric_ready_timeout"],
            log_lines=values["fabric_log_lines"], node_args=tuple(values["fabric_node_args"]),
            otlp_protocol=values["fabric_otlp_protocol"],
        )

    def cluster_spec(self, marker: pytest.Mark | None = None) -> ClusterSpec:
        """The spec of the `fabric` cluster, overridden by a ``@pytest.mark.fabric(...)``."""
        spec = ClusterSpec(meshes=self.mesh_count, types=self.types, node_args=self.node_args)
        if marker is None:
            return spec
        if marker.args:
            raise ConfigError("@pytest.mark.fabric takes keywords only, e.g. @pytest.mark.fabric(meshes=2, "
                              "types=['broker', 'gateway'])")
        unknown = set(marker.kwargs) - {"meshes", "types", "node_args", "cross_mesh"}
        if unknown:
            raise ConfigError(f"@pytest.mark.fabric got unknown argument(s) {', '.join(sorted(unknown))}; "
                              "it takes meshes=N, types=[...], node_args=[...] and cross_mesh='watch'|'backbone'")
        types = marker.kwargs.get("types", spec.types)
        if isinstance(types, str):
            types = _types(types)
        return ClusterSpec(meshes=marker.kwargs.get("meshes", spec.meshes), types=tuple(types),
                           node_args=tuple(marker.kwargs.get("node_args", spec.node_args)),
                           cross_mesh=marker.kwargs.get("cross_mesh", spec.cross_mesh))
