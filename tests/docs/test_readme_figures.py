"""Every figure block in the README is rendered from a recorded file, and the records are complete.

`python -m bench.figures record NAME` writes `bench/results/readme/NAME.json`; `render NAME`
turns the records into the README's blocks. A figure typed into the README by hand, or a record
edited without its command, makes these tests fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import figures
from glimprouter.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("name", sorted(figures.BLOCKS))
def test_readme_block_equals_its_rendering_from_the_records(name: str) -> None:
    readme = README.read_text(encoding="utf-8")
    assert figures.readme_block(readme, name) == figures.render(name), (
        f"the README's {name} block differs from the records: run `python -m bench.figures render {name}` "
        "and paste its output (or record again)"
    )


@pytest.mark.parametrize("name", sorted(figures.RECORDERS))
def test_each_record_names_the_command_that_wrote_it(name: str) -> None:
    document = json.loads((figures.RECORDS / f"{name}.json").read_text(encoding="utf-8"))
    assert document["command"] == f"python -m bench.figures record {name}"
    assert document["machine"]["nproc"] and document["machine"]["packages"]["glimprouter"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", document["date_utc"])
    assert document["figures"]


def test_prose_figures_match_the_records() -> None:
    """The few figures the README's prose repeats are the recorded ones."""
    readme = README.read_text(encoding="utf-8")
    cloud = figures.load("cloud")["tiny_qwen3"]
    ratio = cloud["full_resend_bytes_up"] / cloud["delta_bytes_up"]
    assert f"{ratio:.1f}× after a {cloud['held_tokens']:,.0f}-token transcript" in readme
    systems = {s["name"]: s for s in json.loads(
        (figures.RESULTS / "toy-400" / "results.json").read_text(encoding="utf-8"))["systems"]}
    gains = [100 * (systems[f"glimp share={s}"]["accuracy"] - systems[f"random @share={s}"]["accuracy"])
             for s in ("0.2", "0.3", "0.4")]
    assert f"{min(gains):.1f}–{max(gains):.1f} points" in readme
    speedup = systems["glimp share=0.4"]["latency_mean_s"] / systems["llm steps"]["latency_mean_s"]
    assert f"to {speedup:.2f}× of the step-wise LLM" in readme.replace("\n", " ")


STABLE = ("question:", "[", "answer:", "policy:", "steps:", "tokens:", "bytes:")


def _stable_lines(text: str) -> list[str]:
    """The lines of a demo run that do not depend on timing or ports."""
    return [line for line in text.splitlines() if line.startswith(STABLE)]


@pytest.mark.triton
@pytest.mark.slow
def test_the_demo_prints_what_the_readme_records(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    now = _stable_lines(capsys.readouterr().out)
    recorded = _stable_lines(figures.load("demo")["stdout"])
    assert now == recorded and len(recorded) >= 10, "glimp demo no longer prints what the README shows"
