"""``bench/stacks.py``: collapsed stacks (py-spy's raw format) read, and each sample put where
its innermost frame's code belongs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import stacks
from bench.stacks import CATEGORIES, Frame

SITE = "/usr/lib/python3.11/site-packages"


def frame(function: str, file: str, line: int = 1) -> str:
    return f"{function} ({file}:{line})"


def test_a_line_gives_its_thread_its_frames_outermost_first_and_its_count():
    text = (f"thread (4242): MainThread;{frame('run', '/usr/lib/python3.11/asyncio/runners.py', 118)};"
            f"{frame('send', '/src/fabric/producer.py', 53)} 17\n")
    [stack] = stacks.parse(text)
    assert stack.thread == "MainThread" and stack.count == 17
    assert stack.frames == (Frame("run", "/usr/lib/python3.11/asyncio/runners.py", 118),
                            Frame("send", "/src/fabric/producer.py", 53))


def test_a_thread_without_a_name_or_frames_and_a_native_frame_are_read_too():
    found = stacks.parse("thread (0x7f00aa): tokio-runtime-worker;poll_fn 3\nthread (77) 64\n")
    assert found[0].thread == "tokio-runtime-worker" and found[0].frames == (Frame("poll_fn", "", 0),)
    assert found[1].thread == "thread (77)" and found[1].frames == () and found[1].count == 64


def test_a_function_name_with_spaces_and_brackets_keeps_them():
    [stack] = stacks.parse(f"{frame('_make_async_calls.<locals>.call_async', '/src/fabric/iroh_patch.py', 168)} 5")
    assert stack.frames[-1].function == "_make_async_calls.<locals>.call_async"
    assert stack.frames[-1].label == "_make_async_calls.<locals>.call_async (fabric/iroh_patch.py:168)"


@pytest.mark.parametrize("line", ["no count here", "frame (a.py:1) twelve", " 12"])
def test_a_line_in_another_format_is_an_error_naming_it(line: str):
    with pytest.raises(ValueError, match="line 2 is not '<stack> <count>'"):
        stacks.parse(f"{frame('f', '/a.py')} 1\n{line}\n")


@pytest.mark.parametrize(("file", "category"), [
    (f"{SITE}/opentelemetry/context/__init__.py", "tracing"),
    ("/src/fabric/spans.py", "tracing"),
    ("/src/fabric/propagation.py", "tracing"),
    (f"{SITE}/msgpack/__init__.py", "framing"),
    ("/src/fabric/frames.py", "framing"),
    (f"{SITE}/iroh/iroh_ffi.py", "iroh's bindings"),
    ("/src/fabric/iroh_patch.py", "iroh's bindings"),
    ("/usr/lib/python3.11/asyncio/events.py", "event loop"),
    (f"{SITE}/uvloop/__init__.py", "event loop"),
    ("/src/fabric/streams.py", "the fabric"),
    ("/src/fabric/services/broker.py", "the fabric"),
    ("/src/bench/raw_echo.py", "the benchmark's own code"),
    ("/usr/lib/python3.11/json/decoder.py", "other"),
])
def test_each_innermost_frame_goes_to_its_category_by_its_file(file: str, category: str):
    assert stacks.category(Frame("f", file, 10_000)).startswith(category)


def test_a_frame_on_a_line_that_fsyncs_or_writes_is_the_disks_whatever_its_file(tmp_path: Path):
    source = tmp_path / "fabric" / "log.py"
    source.parent.mkdir()
    source.write_text("def commit(fd):\n    os.fdatasync(fd)\n    n = os.pwrite(fd, b'x', 0)\n    return n\n")
    assert stacks.category(Frame("commit", str(source), 2)) == CATEGORIES[0]
    assert stacks.category(Frame("commit", str(source), 3)) == CATEGORIES[0]
    assert stacks.category(Frame("commit", str(source), 4)) == "the fabric (request path, services)"


def test_samples_add_up_by_thread_group_category_and_innermost_function():
    text = "\n".join([
        f"thread (1): MainThread;{frame('run', '/lib/python3.11/asyncio/runners.py')};{frame('send', '/s/fabric/producer.py', 9)} 6",
        f"thread (1): MainThread;{frame('send', '/s/fabric/producer.py', 9)} 4",
        f"thread (1): MainThread;{frame('inject', '/s/fabric/propagation.py', 3)} 5",
        f"thread (2): tokio-runtime-worker;{frame('_continuation', '/s/fabric/iroh_patch.py', 154)} 7",
        "thread (2) 30",
    ])
    found = stacks.parse(text)
    groups = stacks.by_category(found)
    assert groups[stacks.MAIN_THREAD]["the fabric (request path, services)"] == 10
    assert groups[stacks.MAIN_THREAD]["tracing (spans, trace context, export)"] == 5
    assert groups[stacks.OTHER_THREADS]["iroh's bindings (generated glue, fabric/iroh_patch.py)"] == 7
    assert stacks.total(found) == 52 and stacks.total(found, stacks.MAIN_THREAD) == 15
    assert stacks.top_functions(found, 2) == [("send (fabric/producer.py:9)", 10), ("inject (fabric/propagation.py:3)", 5)]


def test_the_bindings_samples_go_to_the_generated_call_they_serve_whoever_awaited_it():
    ffi, patch = f"{SITE}/iroh/iroh_ffi.py", "/s/fabric/iroh_patch.py"
    write, read = frame("SendStream.write_all", ffi, 3959), frame("RecvStream.read", ffi, 3644)
    text = "\n".join([
        f"thread (1): MainThread;{frame('write_alone', '/s/fabric/streams.py', 105)};{write};"
        + f"{frame('call_async', patch, 168)} 9",
        f"thread (1): MainThread;{frame('echo_round_trips', '/s/bench/raw_echo.py', 139)};{write};"
        + f"{frame('lower', patch, 218)};{frame('alloc', ffi, 50)} 2",
        f"thread (1): MainThread;{frame('_read', '/s/fabric/streams.py', 250)};{read};{frame('call_async', patch, 168)} 4",
        f"thread (1): MainThread;{frame('run', '/lib/python3.11/asyncio/runners.py')};"
        + f"{frame('_uniffi_set_future_result', ffi, 2692)} 3",
        f"thread (1): MainThread;{frame('_read', '/s/fabric/streams.py', 255)} 5",  # not the bindings'
        f"thread (2): tokio-runtime-worker;{frame('_continuation', patch, 154)} 7",  # not the loop's
    ])
    assert stacks.bindings_calls(stacks.parse(text)) == {
        "SendStream.write_all": 11, "RecvStream.read": 4, "_uniffi_set_future_result": 3}


@pytest.mark.parametrize(("file", "short"), [
    (f"{SITE}/opentelemetry/sdk/trace/__init__.py", "opentelemetry/sdk/trace/__init__.py"),
    ("/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/events.py", "asyncio/events.py"),
    ("/work/main/fabric/services/log.py", "fabric/services/log.py"),
    ("<string>", "<string>"),
])
def test_a_files_short_path_starts_at_its_package(file: str, short: str):
    assert stacks.short_path(file) == short


def test_a_line_that_starts_or_changes_a_span_or_carries_trace_context_is_tracings(tmp_path: Path):
    source = tmp_path / "fabric" / "services" / "broker.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "    with tracer.start_as_current_span(f'receive {topic}', kind=SpanKind.CONSUMER) as span:\n"
        "        span.set_attribute('log.fsync', log.fsync)\n"
        "    token = otel_context.attach(propagation.extract(frame.body.get('trace')))\n"
        "    with self._span(broker, topic, seq, 1) as span:\n"
        "    written = log.write_many(records, producer_id, seq)\n")
    found = [stacks.category(Frame("f", str(source), line)) for line in range(1, 6)]
    assert found == [CATEGORIES[1]] * 4 + ["the fabric (request path, services)"]
