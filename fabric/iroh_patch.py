"""Faster glue in the generated Python layer of the iroh 1.2.0 bindings: byte copies,
wake-ups, the runtime thread's Python state, buffer conversions.

The uniffi-generated ``_UniffiRustBufferBuilder.write`` copies outgoing bytes into the Rust
buffer one at a time in a Python loop: bulk writes crawl at ~3-4 MiB/s, CPU-bound. This
replaces that loop with one ``ctypes.memmove`` (same bytes, same buffer growth), which was
measured at ~76-97 MiB/s.

It also shortens every async call into the bindings: a Rust future that is ready when polled
calls its continuation at once, on the loop's own thread, and the generated callback still
goes through ``call_soon_threadsafe`` (a self-pipe write, a wake-up and two loop turns before
the awaiting task resumes). ``_continuation`` resolves the future directly in that case (it
is not awaited yet, so the ``await`` that follows returns without yielding); a "poll again"
on the loop's thread is scheduled with ``call_soon`` (no self-pipe); from the runtime's
thread it still goes through ``call_soon_threadsafe``. In-process echo round trip ~0.36 ->
~0.33 ms.

Around each call the generated glue also builds a status struct with ``default()`` (a
second struct inside it: ~0.65 µs, where a zeroed one is the same fields for ~0.07) and
keeps each poll's future in a handle map that takes a lock on every insert and remove.
``_make_call_with_error`` and ``_make_async_calls`` do the same steps with a zeroed status
and a plain dict: a request's round trip between two transports in one process makes 14
calls with a status and 4 awaits (both sides together) and costs the loop's thread ~16-35 µs less CPU
(medians ~238-252 -> ~218-222 µs in two A/Bs of 30-40 runs of 3,000 requests, alternated).
The bytes of every ``write_all`` are lowered into a buffer of their final size
(``_make_bytes_lower``): one call into the bindings, not an allocation and then a growth.

The runtime thread that completes those futures is not a Python thread: each callback from it
made a Python thread state (``PyGILState_Ensure``) and destroyed it on return, which in 3.11
maps and unmaps the state's frame stack (an ``mmap``/``munmap`` pair a callback; an ``munmap``
in a threaded process interrupts the other cores to flush their TLBs). ``_keep_thread_state``
keeps that thread's state for good, as embedding code does for a long-lived foreign thread.
Raw echo round trip between two processes ~50 µs less (~400 -> ~350 µs), the runtime thread's
CPU ~15-30 µs less a round trip on each side.

And the generic converters' ``lift`` and ``lower`` (bytes, records, sequences: every buffer
that crosses the bindings, twice a produce in each process) each wrapped their work in a
generator-based ``@contextmanager``; ``_make_converters`` does the same steps inline (the
buffer freed after a lift, discarded when a lower fails, "junk data" still an error).

The generated code is private, so the patch applies only to the exact version it was
written and tested against; any other version is left alone.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import struct
import threading
from asyncio import events
from importlib.util import find_spec
from pathlib import Path

log = logging.getLogger(__name__)

PATCHED_VERSION = "1.2.0"
_applied = False
continuation = None  # the patched continuation callback (a ctypes function: kept alive here)
waiting: dict[int, tuple] = {}  # the patched async calls' polls awaiting their continuation
# What the patched async glue replaces or uses in the generated module.
ASYNC_GLUE = ("_uniffi_continuation_callback", "_uniffi_rust_call_async", "_uniffi_rust_call_with_error",
              "_uniffi_check_call_status", "_uniffi_set_future_result", "_UniffiRustCallStatus",
              "_UNIFFI_GLOBAL_EVENT_LOOP", "_UNIFFI_RUST_FUTURE_POLL_READY",
              "_UNIFFI_RUST_FUTURE_CONTINUATION_CALLBACK")


_pointer_in = ctypes.c_void_p.from_buffer


def _write(self, value) -> None:  # type: ignore[no-untyped-def]
    # What the generated ``_reserve`` context manager does, inline (a generator per call), and
    # the buffer's data pointer read in place (no ``ctypes.cast``): ~2.7 -> ~1.2 µs a write.
    data = value if isinstance(value, bytes) else bytes(value)
    size = len(data)
    rbuf = self.rbuf
    length = rbuf.len
    if length + size > rbuf.capacity:
        rbuf = self.rbuf = type(rbuf).reserve(rbuf, size)
    ctypes.memmove(_pointer_in(rbuf, type(rbuf).data.offset).value + length, data, size)
    rbuf.len = length + size


def _pack_into(self, size: int, format: str, value) -> None:  # type: ignore[no-untyped-def]
    _write(self, struct.pack(format, value))


_kept = threading.local()  # per Python thread state: ``kept`` once that state is kept
_gil_state_ensure = ctypes.pythonapi.PyGILState_Ensure
_gil_state_ensure.restype = ctypes.c_int
MAX_KEPT_STATES = 8  # a node's runtime has 2-3 threads; see ``_keep_thread_state``
kept_states = 0


def _keep_thread_state() -> None:
    """Keep the calling thread's Python thread state past this callback (once per thread).

    A ctypes callback on a thread Python did not start makes a thread state and deletes it when
    its ``PyGILState_Release`` brings the thread's count back to zero; one ``Ensure`` never
    released keeps the count above zero, so the next callback reuses the state. (On a thread
    Python started, the extra count is harmless: the state goes when the thread ends.) The mark
    is a thread-local, which lives in the thread state itself: a thread id would be reused by a
    later thread, whose state is new.

    A kept state outlives its thread (~20 KB). iroh's runtime keeps its threads for good, but a
    tokio blocking pool's come and go (a test process that binds hundreds of endpoints saw 14
    in 10 minutes), so at most ``MAX_KEPT_STATES`` are kept; later threads make a state per
    callback, as before.
    """
    global kept_states
    if kept_states < MAX_KEPT_STATES and not getattr(_kept, "kept", False):
        _kept.kept = True
        kept_states += 1
        _gil_state_ensure()


def _make_call_with_error(ffi):  # type: ignore[no-untyped-def]
    """The bindings' ``_uniffi_rust_call_with_error`` (every sync call: handle clones, buffer
    allocations and frees): a zeroed status struct instead of ``default()`` (the same fields:
    code 0, an empty buffer; ~0.65 -> ~0.07 µs), and the status checked only when its code is
    not 0. ``_make_async_calls`` completes its futures through it."""
    status_of, check, byref = ffi._UniffiRustCallStatus, ffi._uniffi_check_call_status, ctypes.byref

    def call_with_error(error_ffi_converter, fn, *args):  # type: ignore[no-untyped-def]
        status = status_of()
        result = fn(*args, byref(status))
        if status.code:
            check(error_ffi_converter, status)
        return result

    return call_with_error


def _make_async_calls(ffi, call_with_error):  # type: ignore[no-untyped-def]
    """The bindings' continuation callback and ``_uniffi_rust_call_async``, sharing a plain dict
    of the futures awaiting a poll instead of the generated handle map (a lock taken on every
    insert and remove: ~0.5 -> ~0.1 µs a poll; a dict's ``pop`` and an ``itertools.count`` are
    atomic under the GIL, and the continuation runs holding it).

    The continuation resolves the future at once on the loop's thread (see the module's
    docstring); the call polls, awaits, completes through ``call_with_error`` (as the generated
    code does through its own) and frees the Rust future on every way out, as generated. Handles
    stay odd, as the generated map makes them."""
    set_result, ready = ffi._uniffi_set_future_result, ffi._UNIFFI_RUST_FUTURE_POLL_READY
    waiting: dict[int, tuple] = {}  # handle -> (loop, future) of each poll not yet called back
    handles = itertools.count(1, 2)

    @ffi._UNIFFI_RUST_FUTURE_CONTINUATION_CALLBACK
    def _continuation(handle, poll_code):  # type: ignore[no-untyped-def]
        loop, future = waiting.pop(handle)
        if events._get_running_loop() is not loop:  # not the loop's thread: iroh's runtime's
            _keep_thread_state()
            loop.call_soon_threadsafe(set_result, future, poll_code)
        elif poll_code == ready:
            set_result(future, poll_code)  # inside the poll, before the ``await``
        else:  # "poll again": after a loop turn, or a future that keeps waking itself would spin
            loop.call_soon(set_result, future, poll_code)

    async def call_async(rust_future, ffi_poll, ffi_complete, ffi_free, lift_func,  # type: ignore[no-untyped-def]
                         error_ffi_converter):
        try:
            loop = ffi._UNIFFI_GLOBAL_EVENT_LOOP or events.get_running_loop()  # as ``_uniffi_get_event_loop``
            while True:
                future = loop.create_future()
                handle = next(handles)
                waiting[handle] = (loop, future)
                ffi_poll(rust_future, _continuation, handle)
                if await future == ready:
                    break
            return lift_func(call_with_error(error_ffi_converter, ffi_complete, rust_future))
        finally:
            ffi_free(rust_future)

    return _continuation, call_async, waiting


def _make_converters(ffi):  # type: ignore[no-untyped-def]
    """``lift`` and ``lower`` for ``_UniffiConverterRustBuffer``: the generated code's steps
    without ``consume_with_stream`` / ``alloc_with_builder`` (a generator each call)."""
    stream_of, new_builder = ffi._UniffiRustBufferStream.from_rust_buffer, ffi._UniffiRustBufferBuilder

    def lift(cls, rbuf):  # type: ignore[no-untyped-def]
        try:
            stream = stream_of(rbuf)
            value = cls.read(stream)
            if stream.remaining() != 0:
                raise RuntimeError(f"junk data left in buffer at end of consume_with_stream {stream.remaining()}")
            return value
        finally:
            rbuf.free()

    def lower(cls, value):  # type: ignore[no-untyped-def]
        builder = new_builder()
        try:
            cls.write(value, builder)
            return builder.finalize()
        except BaseException:
            builder.discard()
            raise

    return classmethod(lift), classmethod(lower)


def _make_bytes_lower(ffi):  # type: ignore[no-untyped-def]
    """``lower`` for ``_UniffiFfiConverterBytes`` (every ``write_all``): the buffer allocated at
    its final size, the length and the bytes copied in (the generated builder allocates 16
    bytes, then grows the buffer through a second call into the bindings: ~6.5 -> ~3.8 µs for
    150 bytes). The same bytes: a big-endian i32 length, then the data."""
    alloc, data_offset = ffi._UniffiRustBuffer.alloc, ffi._UniffiRustBuffer.data.offset
    pack_length = struct.Struct(">i").pack

    def lower(cls, value):  # type: ignore[no-untyped-def]
        data = value if isinstance(value, bytes) else bytes(value)
        size = len(data)
        header = pack_length(size)  # over 2 GiB: ``struct.error``, as the generated ``write_i32``
        rbuf = alloc(4 + size)
        address = _pointer_in(rbuf, data_offset).value
        ctypes.memmove(address, header, 4)
        ctypes.memmove(address + 4, data, size)
        rbuf.len = 4 + size
        return rbuf

    return classmethod(lower)


def installed_version(dist: str = "iroh") -> str | None:
    """The installed version of ``dist`` (``None``: not installed): read off the one
    ``<dist>-<version>.dist-info`` folder beside the package, else asked of ``importlib.metadata``,
    whose import and scan cost a node ~10 ms of its start-up."""
    spec = find_spec(dist)
    if spec is None or spec.origin is None:
        return None
    found = list(Path(spec.origin).parent.parent.glob(f"{dist}-*.dist-info"))
    if len(found) == 1:
        return found[0].name[len(dist) + 1:-len(".dist-info")]
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def apply() -> bool:
    """Patch the bindings if they are the pinned version; return whether the patch is active."""
    global _applied, continuation, waiting
    if _applied:
        return True
    version = installed_version()
    if version is None:
        return False
    from iroh import iroh_ffi

    builder = getattr(iroh_ffi, "_UniffiRustBufferBuilder", None)
    if version != PATCHED_VERSION or builder is None or not hasattr(builder, "_reserve"):
        log.warning("iroh %s is not the pinned %s: bulk writes use the bindings' slow byte copy",
                    version, PATCHED_VERSION)
        return False
    builder.write = _write
    builder._pack_into = _pack_into
    if all(hasattr(iroh_ffi, name) for name in ASYNC_GLUE):
        call_with_error = iroh_ffi._uniffi_rust_call_with_error = _make_call_with_error(iroh_ffi)
        continuation, call_async, waiting = _make_async_calls(iroh_ffi, call_with_error)
        iroh_ffi._uniffi_continuation_callback, iroh_ffi._uniffi_rust_call_async = continuation, call_async
    converter = getattr(iroh_ffi, "_UniffiConverterRustBuffer", None)
    if converter is not None and hasattr(iroh_ffi, "_UniffiRustBufferStream"):
        converter.lift, converter.lower = _make_converters(iroh_ffi)
        if hasattr(iroh_ffi, "_UniffiFfiConverterBytes"):
            iroh_ffi._UniffiFfiConverterBytes.lower = _make_bytes_lower(iroh_ffi)
    _applied = True
    return True
