"""Which event loop a node process runs on (``fabric/event_loop.py``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from fabric import event_loop
from fabric.errors import ConfigError

uvloop = pytest.importorskip("uvloop")


async def running_loop_kind() -> str:
    await asyncio.sleep(0)
    return event_loop.current()


@pytest.mark.parametrize("value, expected", [(None, "uvloop"), ("", "uvloop"), ("auto", "uvloop"),
                                             ("uvloop", "uvloop"), ("asyncio", "asyncio"), (" AsyncIO ", "asyncio")])
def test_the_choice_follows_the_variable_and_defaults_to_uvloop(value, expected):
    environ = {} if value is None else {event_loop.ENV: value}
    assert event_loop.chosen(environ) == expected
    assert event_loop.run(running_loop_kind(), environ) == expected


@pytest.mark.parametrize("value, expected", [(None, "asyncio"), ("auto", "asyncio"), ("uvloop", "uvloop"),
                                             ("asyncio", "asyncio")])
def test_auto_can_prefer_asyncio_and_an_explicit_choice_still_wins(value, expected):
    environ = {} if value is None else {event_loop.ENV: value}
    assert event_loop.chosen(environ, prefer_uvloop=False) == expected
    assert event_loop.run(running_loop_kind(), environ, prefer_uvloop=False) == expected


def test_a_bad_value_is_a_clear_error_and_the_coroutine_is_not_left_unawaited(recwarn):
    main = running_loop_kind()
    with pytest.raises(ConfigError, match=r"MESHFABRIC_EVENT_LOOP='trio': expected one of auto, uvloop, asyncio"):
        event_loop.run(main, {event_loop.ENV: "trio"})
    assert main.cr_frame is None  # closed
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_asking_for_uvloop_without_it_names_the_fix(monkeypatch):
    monkeypatch.setattr(event_loop, "_uvloop_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"uvloop is not installed \(pip install uvloop\), or set MESHFABRIC_EVENT_LOOP=asyncio"):
        event_loop.chosen({event_loop.ENV: "uvloop"})
    assert event_loop.chosen({}) == "asyncio"  # auto falls back quietly


def test_choosing_asyncio_does_not_load_uvloop():
    code = ("import sys; from fabric import event_loop; "
            "print(event_loop.chosen({}, prefer_uvloop=False), event_loop.chosen({event_loop.ENV: 'asyncio'}), "
            "'uvloop' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["asyncio", "asyncio", "False"]
