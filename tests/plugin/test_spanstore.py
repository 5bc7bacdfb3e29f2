"""Tests of the span store the receiver fills: finding spans and traces, and waiting for them
(across threads, under asyncio, with timeouts that say what was awaited and seen)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from pytest_meshfabric.capture import (
    CapturedSpan,
    SpanStore,
    SpanWaitTimeout,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"


def span(name: str, service: str = "mesh1.broker.b1", trace: str = TRACE_ID, sid: str = SPAN_ID, **attrs: Any) -> CapturedSpan:
    return CapturedSpan(trace, sid, None, name, "INTERNAL", 1, 2, attributes=attrs, service_name=service)


def test_find_and_traces():
    store = SpanStore()
    store.add([
        span("gossip round", "mesh1.broker.b1", sid="01" * 8, **{"mesh.id": "m1"}),
        span("gossip round", "mesh2.broker.b9", sid="02" * 8, **{"mesh.id": "m2"}),
        span("resolve", "mesh1.node.n1", trace="ff" * 16, sid="03" * 8, hops=2),
    ])
    assert [s.span_id for s in store.find(service="mesh1.broker.*")] == ["01" * 8]
    assert len(store.find(name="gossip round")) == 2
    assert len(store.find(name="gossip*", service="mesh?.broker.*")) == 2
    assert [s.service_name for s in store.find(**{"mesh.id": "m2"})] == ["mesh2.broker.b9"]
    assert [s.name for s in store.find(trace_id=("ff" * 16).upper(), hops=2)] == ["resolve"]
    assert store.find(hops=3) == [] and store.find(name="nope") == []
    traces = store.traces()
    assert list(traces) == [TRACE_ID, "ff" * 16] and len(traces[TRACE_ID]) == 2
    assert len({*store.all()}) == 3  # spans are hashable
    with pytest.raises(AttributeError):
        store.all()[0].name = "x"  # type: ignore[misc]
    store.clear()
    assert store.all() == [] and len(store) == 0


def test_wait_for_timeout_says_what_was_awaited_and_seen():
    store = SpanStore()
    store.add([span(f"step {i}", service="mesh1.node.n1") for i in range(25)])
    started = time.monotonic()
    with pytest.raises(SpanWaitTimeout) as info:
        store.wait_for(lambda spans: store.find(name="commit"), timeout=0.3, description="a span named 'commit'")
    assert time.monotonic() - started >= 0.3
    assert isinstance(info.value, AssertionError)
    message = str(info.value)
    assert "timed out after 0.3s waiting for a span named 'commit'" in message
    assert "saw 25 span(s) in 1 trace(s) (last 20)" in message
    assert "mesh1.node.n1: step 24" in message and "step 4\n" not in message


def test_wait_for_timeout_on_empty_store_names_the_predicate():
    def three_brokers(spans: list[CapturedSpan]) -> bool:
        return False

    with pytest.raises(SpanWaitTimeout, match="waiting for three_brokers; saw 0 span"):
        SpanStore().wait_for(three_brokers, timeout=0.05)


def test_wait_for_is_woken_by_add_from_another_thread():
    store = SpanStore()
    results: list[Any] = []
    calls = []

    def predicate(spans: list[CapturedSpan]) -> list[CapturedSpan]:
        calls.append(len(spans))
        return store.find(name="late")

    waiter = threading.Thread(target=lambda: results.append(store.wait_for(predicate, timeout=30)))
    waiter.start()
    store.add([span("early")])
    store.add([span("late", sid="0" * 15 + "1")])
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert [s.name for s in results[0]] == ["late"]
    assert len(calls) <= 3  # evaluated on changes only, not polled


def test_wait_for_span_and_quiescent():
    store = SpanStore()
    store.add([span("ready", hops=1)])
    assert store.wait_for_span(name="ready", hops=1, timeout=1).name == "ready"
    with pytest.raises(SpanWaitTimeout, match="a span with name='ready', hops=2"):
        store.wait_for_span(name="ready", hops=2, timeout=0.05)
    started = time.monotonic()
    assert [s.name for s in store.wait_quiescent(quiet=0.1, timeout=5)] == ["ready"]
    assert time.monotonic() - started >= 0.1


def test_wait_quiescent_times_out_while_spans_keep_arriving():
    store = SpanStore()
    stop = threading.Event()

    def producer() -> None:
        while not stop.wait(0.01):  # a steady stream of spans is the condition under test
            store.add([span("tick")])

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        with pytest.raises(SpanWaitTimeout, match="without new spans"):
            store.wait_quiescent(quiet=0.5, timeout=0.3)
    finally:
        stop.set()
        thread.join()


@pytest.mark.asyncio
async def test_await_for_under_asyncio():
    store = SpanStore()
    task = asyncio.create_task(store.await_for(lambda s: store.find(name="async"), timeout=10))
    await asyncio.sleep(0)  # let the task start its worker thread
    store.add([span("async")])
    assert [s.name for s in await task] == ["async"]
    assert [s.name for s in await store.await_quiescent(quiet=0.05, timeout=5)] == ["async"]
    with pytest.raises(SpanWaitTimeout):
        await store.await_for(lambda s: False, timeout=0.05)


def test_cancelled_await_releases_its_thread():
    store = SpanStore()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.await_for(lambda s: False, timeout=60), timeout=0.1)

    started = time.monotonic()
    asyncio.run(main())  # waits for default-executor threads: it would hang ~60 s otherwise
    assert time.monotonic() - started < 10
