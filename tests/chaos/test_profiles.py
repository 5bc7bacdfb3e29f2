"""The chaos profiles: machines run a few short examples unless a chaos profile is chosen.

hypothesis has a built-in ``ci`` profile (100 examples of 50 steps) that it loads by itself
when a CI variable is set; a project profile of that name was never registered, and every
scenario ran for minutes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import Phase, settings

from pytest_meshfabric.stateful import machine_settings


@pytest.fixture
def restore_profile() -> Iterator[None]:
    previous = settings.get_current_profile_name()
    yield
    settings.load_profile(previous)


@pytest.mark.parametrize("loaded", ["default", "ci"])
def test_hypothesis_own_profiles_run_chaos_ci(loaded, restore_profile):
    settings.load_profile(loaded)
    chosen = machine_settings()
    assert (chosen.max_examples, chosen.stateful_step_count, chosen.deadline) == (3, 6, None)
    assert Phase.explain not in chosen.phases and Phase.shrink in chosen.phases


def test_a_chosen_profile_is_used_as_it_is(restore_profile):
    settings.load_profile("chaos-long")
    chosen = machine_settings()
    assert (chosen.max_examples, chosen.stateful_step_count) == (50, 25)
    settings.register_profile("mine", max_examples=7, deadline=1000)
    settings.load_profile("mine")
    assert (machine_settings().max_examples, machine_settings().deadline) == (7, None)
