"""The options that let ``python -m bench`` run a leaner suite: bring-up's backends and a chaos
run without its scenarios (their parsing and reports; the runs themselves need clusters)."""

from __future__ import annotations

import os

import pytest

from bench import bringup, chaos

MACHINE = {"date": "2026-11-27 23:00:00 UTC", "cpus": 2}


def test_bring_up_measures_every_backend_here_or_only_the_fixtures_default(monkeypatch):
    monkeypatch.setattr(bringup, "netns_unavailable_reason", lambda: None)
    assert bringup.backend_names("all") == ["local", "netns"]
    assert bringup.backend_names("local,netns") == ["local", "netns"]
    assert bringup.backend_names("local") == ["local"]
    monkeypatch.setattr(bringup, "netns_unavailable_reason", lambda: "not root")
    assert bringup.backend_names("all") == ["local"]
    for wrong in ("docker", "bogus", "local,", ""):
        with pytest.raises(ValueError):
            bringup.backend_names(wrong)


def test_bring_ups_mesh_counts_and_none():
    assert bringup.mesh_counts("1,2,4") == [1, 2, 4]
    assert bringup.mesh_counts("none") == []
    for wrong in ("0", "two", ""):
        with pytest.raises(ValueError):
            bringup.mesh_counts(wrong)


def test_a_bring_up_without_the_fork_server_leaves_the_switch_as_it_was(monkeypatch):
    from fabric import forkserver
    monkeypatch.delenv(forkserver.ENV, raising=False)
    with bringup.fork_server(False):
        assert not forkserver.enabled()
    assert forkserver.ENV not in os.environ
    monkeypatch.setenv(forkserver.ENV, "on")
    with bringup.fork_server(False):
        assert os.environ[forkserver.ENV] == "off"
    assert os.environ[forkserver.ENV] == "on"


def test_bring_ups_auto_is_the_backend_the_fixture_picks_by_default():
    from pytest_meshfabric.backends import resolve_backend_name
    assert bringup.backend_names("auto") == [resolve_backend_name("auto")[0]]


def chaos_run(scenarios: list[dict]) -> dict:
    return {"size": "2x5", "nodes": 10, "partition": "partition (meshes)", "bringup_s": [2.5, 2.7],
            "partition_heal_s": [0.6, 0.7], "kill_removed_s": [2.0, 2.1], "restart_ready_s": [0.5, 0.5],
            "restart_converged_s": [0.7, 0.8], "errors": [], "scenarios": scenarios}


def test_a_chaos_report_without_scenarios_shows_re_convergence_only():
    text = chaos.report({"backend": "netns", "rounds": 2, "seed": 1, "machine": MACHINE, "runs": [chaos_run([])]})
    assert "partition (meshes) heal -> converged" in text and "0.65" in text
    assert "scenario throughput" not in text and "step kind" not in text


def test_a_chaos_report_with_scenarios_shows_their_throughput_and_failures():
    scenario = {"name": "ChurnInOneMesh", "steps": [["kill -9", 0.01], ["restart", 0.6]], "ends": [0.7],
                "wall_s": 3.0, "failure": "AssertionError: mesh1.broker.abc123 still listed"}
    text = chaos.report({"backend": "netns", "rounds": 2, "seed": 1, "machine": MACHINE,
                         "runs": [chaos_run([scenario])]})
    assert "scenario throughput" in text and "ChurnInOneMesh" in text and "FAILED" in text
    assert "FAILED 2x5 ChurnInOneMesh:\nAssertionError: mesh1.broker.abc123 still listed" in text
