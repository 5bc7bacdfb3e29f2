"""The TCP → Unix socket forward that shows ``meshfabric up``'s console on the host."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric.errors import ConfigError
from fabric.portforward import PortForward


@pytest.fixture
def echo_socket(tmp_path: Path) -> Iterator[Path]:
    """A Unix socket that echoes what it gets, upper-cased, until the client half-closes."""
    path = tmp_path / "echo.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                while data := conn.recv(65536):
                    conn.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        thread.join(5)
        server.close()


def talk(port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and read the answer to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_bytes_flow_both_ways_for_several_connections(echo_socket):
    with PortForward(echo_socket) as forward:
        assert forward.port > 0 and forward.url == f"http://127.0.0.1:{forward.port}/"
        assert talk(forward.port, b"hello") == b"HELLO"
        big = b"abc" * 200_000
        assert talk(forward.port, big) == big.upper()


def test_a_busy_port_is_a_clear_config_error(echo_socket):
    with PortForward(echo_socket) as first:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{first.port}.*another port"):
            PortForward(echo_socket, port=first.port).start()


def test_a_missing_socket_closes_the_client_connection_and_close_stops_listening(tmp_path):
    forward = PortForward(tmp_path / "nobody-here.sock").start()
    try:
        with socket.create_connection(("127.0.0.1", forward.port), timeout=5) as conn:
            assert conn.recv(100) == b"", "the forward closes a connection it cannot pass on"
    finally:
        forward.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", forward.port), timeout=2).close()


def test_closing_with_a_connection_open_ends_it_without_a_traceback(echo_socket, caplog):
    forward = PortForward(echo_socket).start()
    with socket.create_connection(("127.0.0.1", forward.port), timeout=5) as conn:
        conn.sendall(b"still here")  # no half-close: the connection stays open, as a browser's does
        assert conn.recv(100) == b"STILL HERE"
        with caplog.at_level(logging.ERROR):
            forward.close()
        assert conn.recv(100) == b"", "the forward closes the connections it was carrying"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
