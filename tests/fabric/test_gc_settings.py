"""A node process's garbage-collector thresholds: the node's default, the variable, bad values."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from fabric.errors import ConfigError
from fabric.gc_settings import ENV, NODE_THRESHOLDS, configure_for_node, thresholds_from


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_unset_gives_the_node_thresholds():
    assert thresholds_from({}) == NODE_THRESHOLDS


@pytest.mark.parametrize("raw, expected", [("5000", (5000,)), ("5000,20", (5000, 20)),
                                           (" 1,2,3 ", (1, 2, 3)), ("0", (0,)), ("default", None)])
def test_the_variable_is_read_as_gc_set_threshold_takes_it(raw, expected):
    assert thresholds_from({ENV: raw}) == expected


@pytest.mark.parametrize("raw", ["fast", "1,2,3,4", "-5", "1,,2", "1.5"])
def test_a_bad_value_is_a_config_error_naming_the_variable(raw):
    with pytest.raises(ConfigError, match=ENV):
        thresholds_from({ENV: raw})


def test_configure_applies_and_reports(restore_gc):
    gc.set_threshold(700, 10, 10)
    assert configure_for_node({}) == NODE_THRESHOLDS == gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    assert configure_for_node({ENV: "default"}) == (700, 10, 10)
    assert configure_for_node({ENV: "2000"}) == (2000, 10, 10)
