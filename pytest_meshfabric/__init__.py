"""pytest plugin and chaos harness for meshfabric clusters.

The public surface: what this module exports. The plugin itself (options, fixtures, hooks)
is :mod:`pytest_meshfabric.plugin`, loaded by pytest through the ``meshfabric`` entry point.
"""

from .artifacts import to_jaeger, write_trace
from .capture import OtlpReceiver
from .client import SyncFabricClient, connect_client
from .cluster import Cluster, ClusterSpec, Mesh
from .factory import FabricFactory
from .nodes import NodeHandle
from .session import ClusterStartError, FabricSession
from .settings import FabricSettings
from .shapes import MatchResult, Shape, match
from .snapshots import SnapshotGate, mask_service, normalise
from .spanstore import CapturedSpan, SpanStore, SpanWaitTimeout
from .spanview import SpanView
from .traces import SpanNode, Trace, assert_stitched, find_traces
from .waiting import HarnessTimeout, wait_until

__all__ = [
    "CapturedSpan", "Cluster", "ClusterSpec", "ClusterStartError", "FabricFactory", "FabricSession",
    "FabricSettings", "HarnessTimeout", "MatchResult", "Mesh", "NodeHandle", "OtlpReceiver", "Shape",
    "SnapshotGate", "SpanNode", "SpanStore", "SpanView", "SpanWaitTimeout", "SyncFabricClient", "Trace",
    "assert_stitched", "connect_client", "find_traces", "mask_service", "match", "normalise", "to_jaeger",
    "wait_until", "write_trace",
]
