"""The control socket: JSON lines on a Unix socket, named async operations."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from fabric import control
from fabric.control import MAX_LINE, ControlServer
from fabric.errors import ConfigError, ControlError, ResolveError
from fabric.node_config import NodeConfig


class Ops:
    """A few operations, and a gate the ``block`` op waits on."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.gate = asyncio.Event()

    async def echo(self, request: dict) -> dict:
        self.calls.append(request)
        return {"echo": request.get("value"), "op_seen": request["op"]}

    async def status(self, request: dict) -> dict:
        return {"name": "mesh1.broker.abcdef", "path": Path("/x")}  # not JSON: sent with default=str

    async def fabric_fail(self, request: dict) -> dict:
        raise ResolveError("no live node is called mesh9.broker")

    async def crash(self, request: dict) -> dict:
        raise ZeroDivisionError("boom")

    async def not_a_dict(self, request: dict) -> dict:
        return ["not", "a", "dict"]  # type: ignore[return-value]

    async def block(self, request: dict) -> dict:
        await self.gate.wait()
        return {"released": True}

    def table(self) -> dict:
        return {"echo": self.echo, "status": self.status, "fabric_fail": self.fabric_fail,
                "crash": self.crash, "not_a_dict": self.not_a_dict, "block": self.block}


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "c.sock"  # short: a Unix socket path is limited to ~107 bytes


@pytest_asyncio.fixture
async def ops() -> Ops:
    return Ops()


@pytest_asyncio.fixture
async def server(sock: Path, ops: Ops) -> AsyncIterator[ControlServer]:
    srv = ControlServer(sock, ops.table())
    await srv.start()
    yield srv
    ops.gate.set()  # let any blocked handler finish
    await srv.close()


async def raw_exchange(path: Path, lines: list[bytes]) -> list[dict]:
    """Send raw lines on one connection and read one reply per line."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        replies = []
        for line in lines:
            writer.write(line)
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), 5)
            assert reply, f"no reply to {line[:40]!r}"
            replies.append(json.loads(reply))
        return replies
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_request_returns_the_reply(server, sock, ops):
    reply = await control.request(sock, "echo", value=[1, "two"])
    assert reply == {"ok": True, "echo": [1, "two"], "op_seen": "echo"}
    assert ops.calls == [{"op": "echo", "value": [1, "two"]}]


@pytest.mark.asyncio
async def test_socket_is_private_and_removed_on_close(sock, ops):
    sock.write_text("stale")  # left over from a killed run
    srv = ControlServer(sock, ops.table())
    await srv.start()
    try:
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert (await control.request(sock, "echo", value=1))["echo"] == 1
    finally:
        await srv.close()
    assert not sock.exists()
    with pytest.raises(ControlError, match="no node answers"):
        await control.request(sock, "echo")


@pytest.mark.asyncio
async def test_non_json_values_in_a_reply_are_stringified(server, sock):
    reply = await control.request(sock, "status")
    assert reply["path"] == "/x"


@pytest.mark.asyncio
async def test_unknown_op_lists_the_known_ones(server, sock):
    with pytest.raises(ControlError) as info:
        await control.request(sock, "nope")
    message = str(info.value)
    assert "'nope'" in message
    assert "unknown op" in message
    for op in ("echo", "status", "crash"):
        assert op in message


@pytest.mark.asyncio
async def test_invalid_json_gets_an_error_reply_and_the_server_keeps_serving(server, sock):
    bad, not_object, no_op, good = await raw_exchange(
        sock, [b"{this is not json\n", b"[1, 2]\n", b'{"value": 1}\n', b'{"op": "echo", "value": 3}\n'])
    assert bad["ok"] is False and "not valid JSON" in bad["error"]
    assert not_object["ok"] is False and "JSON object" in not_object["error"]
    assert no_op["ok"] is False and "unknown op None" in no_op["error"]
    assert good == {"ok": True, "echo": 3, "op_seen": "echo"}  # same connection still works
    assert (await control.request(sock, "echo", value=4))["echo"] == 4  # and new ones too


@pytest.mark.asyncio
async def test_invalid_utf8_gets_an_error_reply(server, sock):
    (reply,) = await raw_exchange(sock, [b"\xff\xfe\x00garbage\n"])
    assert reply["ok"] is False
    assert (await control.request(sock, "echo", value=5))["echo"] == 5


@pytest.mark.asyncio
async def test_fabric_error_in_an_op_becomes_a_control_error_with_its_message(server, sock):
    with pytest.raises(ControlError, match="no live node is called mesh9.broker"):
        await control.request(sock, "fabric_fail")
    (raw,) = await raw_exchange(sock, [b'{"op": "fabric_fail"}\n'])
    assert raw == {"ok": False, "error": "no live node is called mesh9.broker", "type": "ResolveError"}


@pytest.mark.asyncio
async def test_a_crashing_op_gets_an_error_reply_and_the_server_lives(server, sock, caplog):
    with pytest.raises(ControlError, match="internal error: ZeroDivisionError: boom"):
        await control.request(sock, "crash")
    assert any("control op crash failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(ControlError, match="internal error"):
        await control.request(sock, "not_a_dict")
    assert (await control.request(sock, "echo", value="alive"))["echo"] == "alive"


@pytest.mark.asyncio
async def test_a_line_over_the_limit_closes_that_connection_only(server, sock):
    with pytest.raises(ControlError, match="without answering"):
        await control.request(sock, "echo", value="x" * (MAX_LINE + 10))
    assert (await control.request(sock, "echo", value="after"))["echo"] == "after"


@pytest.mark.asyncio
async def test_concurrent_requests_are_independent(server, sock):
    replies = await asyncio.gather(*(control.request(sock, "echo", value=i) for i in range(20)))
    assert [r["echo"] for r in replies] == list(range(20))


@pytest.mark.asyncio
async def test_an_op_that_does_not_answer_in_time_is_a_control_error(server, sock, ops):
    with pytest.raises(ControlError, match="'block'.*failed"):
        await control.request(sock, "block", timeout=0.2)
    ops.gate.set()
    assert (await control.request(sock, "block"))["released"] is True


@pytest.mark.asyncio
async def test_missing_socket_is_no_node_answers(tmp_path):
    path = tmp_path / "nothing.sock"
    with pytest.raises(ControlError, match="no node answers") as info:
        await control.request(path, "status")
    assert str(path) in str(info.value)


@pytest.mark.asyncio
async def test_a_file_that_is_not_a_socket_is_no_node_answers(tmp_path):
    path = tmp_path / "plain.sock"
    path.write_text("")
    with pytest.raises(ControlError, match="no node answers"):
        await control.request(path, "status")


def test_request_sync_without_a_loop_on_a_missing_socket(tmp_path):
    with pytest.raises(ControlError, match="no node answers"):
        control.request_sync(tmp_path / "none.sock", "status")


@pytest.mark.asyncio
@pytest.mark.parametrize("answer", [b"garbage\n", b"[1, 2]\n", b"\xff\xfe\n", b'"ok"\n'])
async def test_a_socket_that_answers_something_else_is_a_control_error(sock, answer):
    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(answer)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_unix_server(impostor, path=str(sock))
    try:
        with pytest.raises(ControlError, match="not a control reply"):
            await control.request(sock, "status")
    finally:
        srv.close()
        await srv.wait_closed()


def padded_path(directory: Path, size: int) -> Path:
    """A path in ``directory`` exactly ``size`` bytes long."""
    stem = len(str(directory / "s"))
    assert stem < size, f"{directory} leaves no room for a {size}-byte path"
    return directory / ("s" * (size - stem + 1))


def test_the_socket_path_limit_is_the_kernels(tmp_path: Path):
    longest = padded_path(tmp_path, control.MAX_SOCKET_PATH_BYTES)
    assert control.socket_path_problem(longest) is None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(longest))  # the longest path the check allows binds
    over = padded_path(tmp_path, control.MAX_SOCKET_PATH_BYTES + 1)
    problem = control.socket_path_problem(over)
    assert problem is not None and f"{control.MAX_SOCKET_PATH_BYTES + 1} bytes long" in problem
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, pytest.raises(OSError):
        sock.bind(str(over))  # one byte more does not


def test_a_node_whose_control_socket_would_not_fit_is_refused_before_it_boots(tmp_path: Path):
    deep = padded_path(tmp_path, control.MAX_SOCKET_PATH_BYTES - len("/control.sock") + 1)
    with pytest.raises(ConfigError, match="shorter --data-dir") as refused:
        NodeConfig("mesh1", "broker", deep)
    assert str(deep / "control.sock") in str(refused.value)
    NodeConfig("mesh1", "broker", deep.parent / "short")  # a shorter one is fine
