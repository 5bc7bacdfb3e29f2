"""pytest plugin and chaos harness for meshfabric clusters.

The public surface: what this module exports. The plugin itself (options, fixtures, hooks)
is :mod:`pytest_meshfabric.plugin`, loaded by pytest through the ``meshfabric`` entry point.
"""

from . import checkers
from .artifacts import to_jaeger, write_trace
from .capture import OtlpReceiver
from .checkers import History, QueueReport, check_directories, check_queue, check_traces
from .client import SyncFabricClient, connect_client
from .cluster import Cluster, ClusterSpec, Mesh
from .factory import FabricFactory
from .nemesis import FaultEvent, FaultUnavailable, Nemesis
from .nodes import NodeHandle
from .session import ClusterStartError, FabricSession
from .settings import FabricSettings
from .shapes import MatchResult, Shape, match
from .snapshots import SnapshotGate, mask_service, normalise
from .spanstore import CapturedSpan, SpanStore, SpanWaitTimeout
from .spanview import SpanView
from .stateful import ChaosFailure, FabricMachine, machine_settings, run_machine
from .traces import SpanNode, Trace, assert_stitched, find_traces
from .waiting import HarnessTimeout, wait_until

__all__ = [
    "CapturedSpan", "ChaosFailure", "Cluster", "ClusterSpec", "ClusterStartError", "FabricFactory", "FabricMachine",
    "FabricSession", "FabricSettings", "FaultEvent", "FaultUnavailable", "HarnessTimeout", "History", "MatchResult",
    "Mesh", "Nemesis", "NodeHandle", "OtlpReceiver", "QueueReport", "Shape", "SnapshotGate", "SpanNode", "SpanStore",
    "SpanView", "SpanWaitTimeout", "SyncFabricClient", "Trace", "assert_stitched", "check_directories",
    "check_queue", "check_traces", "checkers", "connect_client", "find_traces", "machine_settings", "mask_service",
    "match", "normalise", "run_machine", "to_jaeger", "wait_until", "write_trace",
]
