"""dyno plan's arithmetic on a hand-made study, exact numbers."""

from __future__ import annotations

import pytest

from tuner.plan import Capacity, main as plan_main, plan_row


def test_replicas_headroom_and_cost_exact():
    row = plan_row(Capacity(1, goodput=5.0, output_tokens_per_request=100.0), rate=10, headroom=0.2, price=2.5)
    # 10 req/s * 1.2 = 12 req/s needed; 12 / 5 = 2.4 -> 3 replicas, 15 req/s, 50% over the target.
    assert row.replicas == 3 and row.total_rps == 15.0 and row.headroom == pytest.approx(0.5)
    # $2.50 * 3 per hour; 10 req/s * 100 tokens * 3600 s = 3.6 M tokens per hour.
    assert row.cost_per_hour == 7.5
    assert row.cost_per_million_tokens == pytest.approx(7.5 / 3.6)


def test_exact_fit_takes_no_extra_replica_and_zero_goodput_takes_none():
    assert plan_row(Capacity(0, 2.0, 100.0), rate=10, headroom=0.2, price=None).replicas == 6
    none = plan_row(Capacity(0, 0.0, 100.0), rate=10, headroom=0.2, price=1.0)
    assert none.replicas is None and none.cost_per_hour is None


def test_plan_command_sentence_first_then_the_table(hand_study, storage, capsys):
    code = plan_main(["--study-name", "hand", "--storage", storage, "--rate", "10", "--cost-per-hour", "2.5"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == ("To serve 10 req/s, run 3 replicas of trial 1 (5 req/s each, 15 req/s in all: "
                                   "50% headroom over the target). That costs $7.50 per hour, $2.08 per million "
                                   "output tokens.")
    assert "replicas per trial" in out
    # the baseline row: 6 replicas at $15.00 per hour; the failed trial has no row
    assert "15.00" in out and "│     2 " not in out


def test_plan_for_a_chosen_trial_and_unmeetable(hand_study, storage, capsys):
    plan_main(["--study-name", "hand", "--storage", storage, "--rate", "3", "--trial", "0", "--headroom", "0"])
    assert capsys.readouterr().out.startswith("To serve 3 req/s, run 2 replicas of trial 0 (2 req/s each")
    assert plan_main(["--study-name", "hand", "--storage", storage, "--rate", "0"]) == 2
