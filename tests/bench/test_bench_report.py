"""The table's arithmetic and the target checks, on made-up result sets."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from typing import Any

import pytest

from bench.e2e.records import ProblemResult
from bench.e2e.report import SystemRun, close_table, csv_text, markdown_table, summarize, table_rows
from bench.e2e.targets import best_glimp, check_targets

BASE = ProblemResult(
    problem_id="p", correct=True, predicted="1", expected="1", wall_s=0.1, edge_compute_s=0.01,
    network_s=0.04, cloud_queue_s=0.0, cloud_compute_s=0.02, close_s=0.0, steps=4, cloud_steps=0,
    degraded_steps=0,
    step_tokens=20, cloud_step_tokens=0, answer_tokens=5, answer_by_cloud=True, wasted_tokens=0,
    bytes_up=100, bytes_down=80, resync_bytes_up=0, calls=1, thinking_stop="think_end", output="A:1",
)


def _run(name: str, family: str, rows: list[ProblemResult], *, matched_to: str = "",
         wire: tuple[int, int] = (0, 0)) -> SystemRun:
    rows = [replace(r, problem_id=f"p{i}") for i, r in enumerate(rows)]
    return SystemRun(name, family, matched_to, family == "resend", "policy", tuple(rows), *wire, 1.0)


def test_summary_pools_shares_and_averages_per_problem() -> None:
    rows = [
        replace(BASE, cloud_steps=1, cloud_step_tokens=5, wasted_tokens=1, wall_s=0.2),
        replace(BASE, correct=False, steps=6, cloud_steps=2, step_tokens=30, cloud_step_tokens=12,
                wasted_tokens=2, answer_by_cloud=False, bytes_up=300, wall_s=0.4),
    ]
    s = summarize(_run("glimp tau=0.3", "glimp-tau", rows, wire=(1000, 600)))
    assert s.accuracy == 0.5 and s.accuracy_se == pytest.approx(0.5 * 0.5 ** 0.5)
    assert s.cloud_step_share == pytest.approx(3 / 10)  # pooled steps, not a mean of ratios
    # kept tokens: steps 20 + 30, answers 5 + 5; the LLM wrote 5 + 12 step tokens and one answer
    assert s.cloud_token_share == pytest.approx((5 + 12 + 5) / 60)
    assert s.wasted_tokens_per_cloud_step == pytest.approx(1.0)
    assert s.bytes_up_per_problem == 200 and s.wire_up_per_problem == 500 and s.wire_down_per_problem == 300
    assert s.latency_mean_s == pytest.approx(0.3) and s.tokens_per_step == pytest.approx(5.0)
    assert s.cloud_steps_per_problem == 1.5
    # wall 0.2 and 0.4 minus the four measured parts (0.07 each): the rest of the time
    assert s.other_s == pytest.approx(0.3 - 0.07)


def test_no_cloud_step_gives_no_waste_ratio_rather_than_zero() -> None:
    s = summarize(_run("slm", "slm", [replace(BASE, answer_by_cloud=False, bytes_up=0, calls=0)]))
    assert s.wasted_tokens_per_cloud_step is None and s.cloud_token_share == 0.0
    assert table_rows([s])[0][-1] == "-"


def test_markdown_and_csv_have_one_row_per_system_and_the_relative_latency() -> None:
    llm = summarize(_run("llm steps", "llm-steps", [replace(BASE, wall_s=0.4, cloud_steps=4)]))
    glimp = summarize(_run("glimp tau=0.3", "glimp-tau", [replace(BASE, wall_s=0.1, cloud_steps=1)]))
    table = markdown_table([llm, glimp]).splitlines()
    assert len(table) == 4 and table[0].startswith("| system | accuracy %")
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert table_rows([llm, glimp])[1][3] == "0.25"
    rows = list(csv.DictReader(io.StringIO(csv_text([llm, glimp]))))
    assert [r["name"] for r in rows] == ["llm steps", "glimp tau=0.3"]
    assert float(rows[1]["latency_mean_s"]) == pytest.approx(0.1)


def _scenario() -> list[SystemRun]:
    def rows(right: int, wrong: int, **fields: Any) -> list[ProblemResult]:
        row = replace(BASE, **fields)
        return [row] * right + [replace(row, correct=False)] * wrong

    return [
        _run("llm steps", "llm-steps", rows(9, 1, wall_s=0.5, cloud_steps=4)),
        _run("glimp tau=1", "glimp-tau", rows(8, 2, wall_s=0.2, cloud_steps=1, wasted_tokens=1, bytes_up=50)),
        _run("glimp share=0.3", "glimp-share",
             rows(9, 1, wall_s=0.3, cloud_steps=1, wasted_tokens=1, bytes_up=60)),
        _run("random @share=0.3", "random", rows(7, 3, cloud_steps=1), matched_to="glimp share=0.3"),
        _run("verify lp<-0.5", "verify", rows(10, 0, cloud_steps=1, wasted_tokens=6)),
        _run("glimp share=0.3 full-resend", "resend", rows(9, 1, bytes_up=900)),
    ]


def test_best_glimp_is_the_fastest_within_one_point_of_the_llm() -> None:
    summaries = [summarize(r) for r in _scenario()]
    best = best_glimp(summaries)
    assert best is not None and best.name == "glimp share=0.3"  # tau=1 is faster but 10 points worse
    without_llm = best_glimp([s for s in summaries if s.family != "llm-steps"])
    assert without_llm is not None and without_llm.name == "glimp share=0.3"  # the most accurate


def test_targets_report_measured_numbers() -> None:
    checks = check_targets(_scenario())
    assert len(checks) == 5

    def check(word: str):  # type: ignore[no-untyped-def]
        return next(c for c in checks if word in c.target)

    assert check("latency").met is True and "300.0 ms vs 500.0 ms = 0.60x" in check("latency").measured
    assert check("accuracy").met is True and "(+0.0 points)" in check("accuracy").measured
    assert check("random").met is True
    assert "+20.0 points; right only with GlimpRouter 2, only with random 0" in check("random").measured
    assert check("uplink").met is True and "= 15.00x" in check("uplink").measured
    assert check("wasted").met is True and "verify lp<-0.5 6.00" in check("wasted").measured


def test_a_missed_target_says_by_how_much() -> None:
    runs = _scenario()
    runs[3] = replace(runs[3], results=runs[2].results)  # random as accurate as GlimpRouter
    runs[5] = replace(runs[5], results=tuple(replace(r, bytes_up=120) for r in runs[5].results))
    checks = {c.target.split()[0]: c for c in check_targets(runs)}
    assert checks["first-token"].met is False and "+0.0 points" in checks["first-token"].measured
    assert checks["uplink"].met is False and "= 2.00x" in checks["uplink"].measured


def test_the_cost_table_prices_cloud_tokens_against_both_all_cloud_systems() -> None:
    from bench.e2e.report import cost_rows
    from edge_client.cost import Prices

    one_call = summarize(_run("llm one-call", "llm-one-call", [replace(BASE, cloud_input_tokens=10,
                                                                        cloud_output_tokens=25)]))
    steps = summarize(_run("llm steps", "llm-steps", [replace(BASE, cloud_input_tokens=60,
                                                                cloud_output_tokens=30)]))
    problems = [replace(BASE, cloud_input_tokens=40, cloud_output_tokens=5),
                replace(BASE, cloud_input_tokens=20, cloud_output_tokens=15)]
    glimp = summarize(_run("glimp tau=0.3", "glimp-tau", problems))
    rows = cost_rows([one_call, steps, glimp], Prices(1.0, 4.0, "EUR"))
    # per problem: one-call 10 in + 25 out = 110 per million -> 0.11 per 1k problems
    assert rows[0][1:4] == ["10.0", "25.0", "0.1100 EUR"]
    assert rows[1][3] == "0.1800 EUR"  # 60 + 4 * 30
    # glimp: means 30 in, 10 out = 70 per million; 0.07 / 0.11 and 0.07 / 0.18
    assert rows[2] == ["glimp tau=0.3", "30.0", "10.0", "0.0700 EUR", "0.64", "0.39"]


def test_without_an_all_cloud_system_the_ratios_are_dashes() -> None:
    from bench.e2e.report import cost_rows
    from edge_client.cost import Prices

    glimp = summarize(_run("glimp tau=0.3", "glimp-tau", [replace(BASE, cloud_input_tokens=40)]))
    assert cost_rows([glimp], Prices(1.0, 4.0))[0][-2:] == ["-", "-"]


def test_the_close_table_sets_each_blocking_twin_beside_its_original() -> None:
    background = summarize(_run("glimp tau=0.3", "glimp-tau", [replace(BASE, wall_s=0.10, close_s=0.0001)]))
    blocking = summarize(_run("glimp tau=0.3 blocking-close", "blocking-close",
                              [replace(BASE, wall_s=0.15, close_s=0.05)]))
    assert close_table([background]) == ""  # no twin ran: no section
    rows = close_table([background, blocking]).splitlines()
    assert rows[2].startswith("| glimp tau=0.3 | blocking | 150.0 |")
    assert rows[3].startswith("| glimp tau=0.3 | background | 100.0 |")
    assert rows[4].startswith("| glimp tau=0.3 | saved | 50.0 | 50.0 | 50.0 | 49.90 |")
