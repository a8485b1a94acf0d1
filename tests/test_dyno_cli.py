"""The `dyno` dispatcher's own behaviour (each command's is tested with its package)."""

from __future__ import annotations

import pytest

from dyno.cli import bind_engine_threads


def test_engine_threads_are_bound_one_per_core_by_default():
    env: dict[str, str] = {}
    assert bind_engine_threads(env)
    assert env == {"OMP_PROC_BIND": "true", "OMP_PLACES": "cores"}


@pytest.mark.parametrize("name, value", [("OMP_PROC_BIND", "false"), ("OMP_PLACES", "{0,1}"),
                                         ("GOMP_CPU_AFFINITY", "0-3"), ("KMP_AFFINITY", "compact"),
                                         ("OMP_NUM_THREADS", "4")])
def test_a_users_thread_placement_or_count_is_left_alone(name, value):
    """A thread count means the machine is shared: binding would stack every process's threads
    on the same first cores."""
    env = {name: value}
    assert not bind_engine_threads(env)
    assert env == {name: value}
