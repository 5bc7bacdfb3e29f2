"""The bindings patch: same bytes in the Rust buffer as the generated code, on the pinned version."""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import threading

import iroh
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iroh import iroh_ffi

from fabric import iroh_patch


def test_the_patch_is_active_on_the_pinned_version():
    assert iroh_patch.apply() is True
    assert iroh_ffi._UniffiRustBufferBuilder.write is iroh_patch._write


def test_the_installed_version_is_read_as_importlib_metadata_reads_it(tmp_path, monkeypatch):
    from importlib import metadata
    for dist in ("iroh", "msgpack", "hypothesis"):
        assert iroh_patch.installed_version(dist) == metadata.version(dist)
    assert iroh_patch.installed_version("no_such_distribution_here") is None
    # Two dist-info folders beside a package (a botched upgrade): importlib.metadata decides.
    package = tmp_path / "twice"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for version in ("1.0", "2.0"):
        info = tmp_path / f"twice-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: twice\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert iroh_patch.installed_version("twice") == metadata.version("twice")


def test_a_version_other_than_the_pinned_one_is_left_unpatched(monkeypatch, caplog):
    monkeypatch.setattr(iroh_patch, "_applied", False)
    monkeypatch.setattr(iroh_patch, "installed_version", lambda dist="iroh": "1.3.0")
    assert iroh_patch.apply() is False
    assert "iroh 1.3.0 is not the pinned 1.2.0" in caplog.text


def _options() -> iroh.EndpointOptions:
    """A loopback endpoint's options: no relay, no discovery."""
    return iroh.EndpointOptions(preset=iroh.preset_minimal(), bind_addr="127.0.0.1:0")


def _original_write(builder, value):
    """The generated code's byte-at-a-time loop, as shipped in iroh 1.2.0."""
    with builder._reserve(len(value)):
        for i, byte in enumerate(value):
            builder.rbuf.data[builder.rbuf.len + i] = byte


def _contents(writes, write) -> bytes:
    builder = iroh_ffi._UniffiRustBufferBuilder()
    for kind, value in writes:
        if kind == "bytes":
            write(builder, value)
        else:
            builder.write_u32(value)
    rbuf = builder.finalize()
    try:
        return bytes(rbuf.data[0:rbuf.len])
    finally:
        rbuf.free()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("bytes"), st.binary(max_size=3000)),
                          st.tuples(st.just("u32"), st.integers(0, 2**32 - 1))), max_size=12))
def test_patched_write_builds_the_same_buffer_as_the_generated_code(writes):
    iroh_patch.apply()
    patched = _contents(writes, iroh_patch._write)
    original = _contents(writes, _original_write)
    assert patched == original


@pytest.mark.asyncio
async def test_a_bulk_transfer_arrives_byte_for_byte():
    iroh_patch.apply()
    a, b = await iroh.Endpoint.bind(_options()), await iroh.Endpoint.bind(_options())
    a.set_alpns([b"test/bulk"])
    payload = bytes(range(256)) * 8192 + b"tail"  # 2 MiB and a bit

    async def serve() -> bytes:
        conn = await (await (await a.accept_next()).accept()).connect()
        return await (await conn.accept_uni()).read_to_end(len(payload) + 1)

    server = asyncio.create_task(serve())
    try:
        conn = await b.connect(iroh.EndpointAddr(a.id(), None, a.addr().direct_addresses()), b"test/bulk")
        send = await conn.open_uni()
        await send.write_all(payload)
        await send.finish()
        received = await asyncio.wait_for(server, 20)
    finally:
        await b.close()
        await a.close()
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


async def _echo(alpn: bytes, payloads: list[bytes]) -> None:
    """Two endpoints in this process: each payload sent on one bi stream and read back whole."""
    a, b = await iroh.Endpoint.bind(_options()), await iroh.Endpoint.bind(_options())
    a.set_alpns([alpn])

    async def serve() -> None:
        conn = await (await (await a.accept_next()).accept()).connect()
        bi = await conn.accept_bi()
        recv, send = bi.recv(), bi.send()
        while data := await recv.read(65536):
            await send.write_all(data)
        await send.finish()

    server = asyncio.create_task(serve())
    try:
        conn = await b.connect(iroh.EndpointAddr(a.id(), None, a.addr().direct_addresses()), alpn)
        bi = await conn.open_bi()
        send, recv = bi.send(), bi.recv()
        for payload in payloads:
            await send.write_all(payload)
            assert await recv.read_exact(len(payload)) == payload
        await send.finish()
        await asyncio.wait_for(server, 5)
    finally:
        await b.close()
        await a.close()


def test_the_continuation_is_patched_and_echoes_still_work():
    """A ready future resolves inside the poll; wake-ups still come back through the loop."""
    assert iroh_patch.apply() is True
    assert iroh_ffi._uniffi_continuation_callback is iroh_patch.continuation is not None
    asyncio.run(asyncio.wait_for(_echo(b"test/echo", [i.to_bytes(4, "big") * 16 for i in range(200)]), 30))


def _original_lower(converter, value):
    """The generated ``_UniffiConverterRustBuffer.lower``, as shipped in iroh 1.2.0."""
    with iroh_ffi._UniffiRustBuffer.alloc_with_builder() as builder:
        converter.write(value, builder)
        return builder.finalize()


def _original_lift(converter, rbuf):
    """The generated ``_UniffiConverterRustBuffer.lift``."""
    with rbuf.consume_with_stream() as stream:
        return converter.read(stream)


CONVERTERS = [
    (iroh_ffi._UniffiFfiConverterBytes, st.binary(max_size=3000) | st.binary(max_size=100).map(bytearray)),
    (iroh_ffi._UniffiFfiConverterOptionalBytes, st.none() | st.binary(max_size=200)),
    (iroh_ffi._UniffiFfiConverterSequenceBytes, st.lists(st.binary(max_size=50), max_size=8)),
    (iroh_ffi._UniffiFfiConverterSequenceString, st.lists(st.text(max_size=20), max_size=8)),
]


def test_the_converters_use_the_patched_lift_and_lower():
    assert iroh_patch.apply() is True
    for converter, _ in CONVERTERS:
        lower = "_make_bytes_lower" if converter is iroh_ffi._UniffiFfiConverterBytes else "_make_converters"
        assert converter.lift.__func__.__qualname__ == "_make_converters.<locals>.lift"
        assert converter.lower.__func__.__qualname__ == f"{lower}.<locals>.lower"


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_patched_lift_and_lower_match_the_generated_code(data):
    iroh_patch.apply()
    for converter, values in CONVERTERS:
        value = data.draw(values)
        patched, original = converter.lower(value), _original_lower(converter, value)
        assert bytes(patched.data[0:patched.len]) == bytes(original.data[0:original.len])
        assert converter.lift(patched) == value == _original_lift(converter, original)  # both freed


def test_a_lift_with_junk_left_over_fails_and_frees_the_buffer(monkeypatch):
    iroh_patch.apply()
    builder = iroh_ffi._UniffiRustBufferBuilder()
    builder.write_i32(1)
    builder.write(b"x" + b"junk")
    rbuf = builder.finalize()
    freed = []
    original_free = iroh_ffi._UniffiRustBuffer.free
    monkeypatch.setattr(iroh_ffi._UniffiRustBuffer, "free", lambda self: (freed.append(1), original_free(self)))
    with pytest.raises(RuntimeError, match="junk data left in buffer"):
        iroh_ffi._UniffiFfiConverterBytes.lift(rbuf)
    assert freed == [1]


def test_a_lower_that_fails_discards_its_buffer(monkeypatch):
    iroh_patch.apply()
    discarded = []
    original_discard = iroh_ffi._UniffiRustBufferBuilder.discard
    monkeypatch.setattr(iroh_ffi._UniffiRustBufferBuilder, "discard",
                        lambda self: (discarded.append(1), original_discard(self)))
    with pytest.raises(TypeError):
        iroh_ffi._UniffiFfiConverterSequenceBytes.lower([b"bytes", "not bytes"])
    assert discarded == [1]


def test_a_bytes_lower_that_fails_allocates_nothing(monkeypatch):
    """The patched bytes ``lower`` checks its value before it allocates a buffer."""
    iroh_patch.apply()
    calls = []  # every call into the bindings (``_UniffiRustBuffer.alloc`` makes one)
    original_call = iroh_ffi._uniffi_rust_call
    monkeypatch.setattr(iroh_ffi, "_uniffi_rust_call", lambda fn, *args: (calls.append(fn), original_call(fn, *args))[1])
    iroh_ffi._UniffiFfiConverterBytes.lower(b"ok").free()
    assert calls, "the bytes lower allocates through the bindings"
    calls.clear()
    with pytest.raises(TypeError):
        iroh_ffi._UniffiFfiConverterBytes.lower("not bytes")
    assert calls == []


def test_the_runtime_threads_python_state_is_kept_across_callbacks(monkeypatch):
    """Each wake-up from iroh's runtime thread used to make and delete a Python thread state
    (a new state id each time); kept, every callback from that thread runs in the same one."""
    assert iroh_patch.apply() is True
    state_get = ctypes.pythonapi.PyThreadState_Get
    state_get.restype = ctypes.c_void_p
    state_id = ctypes.pythonapi.PyThreadState_GetID
    state_id.argtypes, state_id.restype = [ctypes.c_void_p], ctypes.c_uint64
    seen: list[tuple[int, int]] = []  # (thread ident, thread state id) of each runtime-thread callback
    keep = iroh_patch._keep_thread_state

    def recording_keep() -> None:
        keep()
        seen.append((threading.get_ident(), state_id(state_get())))

    monkeypatch.setattr(iroh_patch, "_keep_thread_state", recording_keep)
    # Tests run before this one in the same process (endpoints bound by the hundred) may have
    # used up the limit on kept states with threads long gone: start from none kept.
    monkeypatch.setattr(iroh_patch, "kept_states", 0)

    asyncio.run(asyncio.wait_for(_echo(b"test/state", [b"x" * 8] * 50), 30))
    main = threading.get_ident()
    runtime = [(ident, state) for ident, state in seen if ident != main]
    assert len(runtime) >= 20, f"expected wake-ups from iroh's runtime thread, saw {len(runtime)}"
    states_per_thread = {ident: {state for i, state in runtime if i == ident} for ident, _ in runtime}
    assert all(len(states) == 1 for states in states_per_thread.values()), states_per_thread


def test_thread_states_are_kept_once_per_thread_and_only_up_to_the_limit(monkeypatch):
    """Each thread's state is kept once however often it calls back, and no more than
    ``MAX_KEPT_STATES`` are: a kept state outlives its thread (run here on Python threads, with
    a counting stand-in for ``PyGILState_Ensure``)."""
    ensured: list[str] = []
    monkeypatch.setattr(iroh_patch, "_gil_state_ensure", lambda: ensured.append(threading.current_thread().name))
    monkeypatch.setattr(iroh_patch, "kept_states", iroh_patch.MAX_KEPT_STATES - 2)

    def calls_back_three_times() -> None:
        for _ in range(3):
            iroh_patch._keep_thread_state()

    for i in range(4):  # one after another: a thread's id is reused by the next, its state is not
        thread = threading.Thread(target=calls_back_three_times, name=f"t{i}")
        thread.start()
        thread.join()
    assert ensured == ["t0", "t1"]
    assert iroh_patch.kept_states == iroh_patch.MAX_KEPT_STATES


def test_the_async_glue_is_patched():
    assert iroh_patch.apply() is True
    assert iroh_ffi._uniffi_rust_call_async.__qualname__ == "_make_async_calls.<locals>.call_async"
    assert iroh_ffi._uniffi_rust_call_with_error.__qualname__ == "_make_call_with_error.<locals>.call_with_error"


def test_a_zeroed_status_has_the_generated_defaults_fields():
    """The patched glue makes its status structs zeroed, not with ``default()``: the same fields."""
    zeroed, default = iroh_ffi._UniffiRustCallStatus(), iroh_ffi._UniffiRustCallStatus.default()
    assert (zeroed.code, zeroed.error_buf.capacity, zeroed.error_buf.len) == (0, 0, 0)
    assert (default.code, default.error_buf.capacity, default.error_buf.len) == (0, 0, 0)
    assert not zeroed.error_buf.data and not default.error_buf.data  # both null pointers


def test_a_failing_call_still_raises_the_bindings_error():
    """An error status from a sync call is lifted into the bindings' own exception."""
    assert iroh_patch.apply() is True
    with pytest.raises(iroh.IrohError):
        iroh.EndpointId.from_string("not a key")


@pytest.mark.asyncio
async def test_a_failing_await_still_raises_the_bindings_error():
    """An async call whose Rust future completes with an error raises it from the ``await``
    (here: opening a stream on a connection this side closed)."""
    assert iroh_patch.apply() is True
    a, b = await iroh.Endpoint.bind(_options()), await iroh.Endpoint.bind(_options())
    a.set_alpns([b"test/closed"])
    try:
        dialling = asyncio.create_task(
            b.connect(iroh.EndpointAddr(a.id(), None, a.addr().direct_addresses()), b"test/closed"))
        incoming = await asyncio.wait_for(a.accept_next(), 20)
        await asyncio.wait_for((await incoming.accept()).connect(), 20)
        conn = await asyncio.wait_for(dialling, 20)
        conn.close(0, b"done")
        with pytest.raises(iroh.IrohError):
            await asyncio.wait_for(conn.open_bi(), 20)
    finally:
        await b.close()
        await a.close()


@pytest.mark.asyncio
async def test_a_cancelled_await_frees_its_rust_future_and_its_poll():
    """Cancelling an await into the bindings frees the Rust future, which calls the pending
    poll's continuation once more: nothing is left waiting for it."""
    assert iroh_patch.apply() is True
    endpoint = await iroh.Endpoint.bind(_options())
    try:
        for _ in range(5):
            before = set(iroh_patch.waiting)  # other tests' loops may have left polls behind
            accepting = asyncio.create_task(endpoint.accept_next())
            deadline = asyncio.get_running_loop().time() + 5
            while not set(iroh_patch.waiting) - before and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.001)
            polls = set(iroh_patch.waiting) - before
            assert polls, "the accept's poll should be pending: no one is dialling"
            accepting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await accepting
            deadline = asyncio.get_running_loop().time() + 5
            while polls & set(iroh_patch.waiting) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.005)
            assert not polls & set(iroh_patch.waiting)
    finally:
        await endpoint.close()
