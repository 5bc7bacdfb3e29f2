"""The admin console: a ``console`` node serves a web page on its own event loop.

Three views — Cache (the node's gossiped directory, live over server-sent events), Topology
(meshes as swim-lanes, edges between the nodes that talk, read off the spans) and Traces
(recent traces, each a Jaeger-like waterfall). The console receives spans as any collector
does, over OTLP/HTTP at ``/v1/traces``, and can forward them.

    service.py    the node service: settings, web server lifecycle, URL in the ready line
    web.py        the aiohttp app: page, JSON API, live events, OTLP endpoint, token-gated actions
    collector.py  OTLP bodies in → spans stored, edges traced, bodies forwarded
    store.py      the bounded span store: traces, search, paging
    topology.py   edges between services from parent/child spans; swim-lane layout
    static/       the page: HTML, CSS and plain JavaScript modules (no build step, no CDN)
"""

from .service import ConsoleService, check_console_settings

__all__ = ["ConsoleService", "check_console_settings"]
