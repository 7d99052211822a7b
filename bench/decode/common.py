"""What the decode benchmark and the GPU checks share.

The benchmark model (a random ~27M Qwen3 of `export.shapes`, built and exported once), the timing
protocol (warm-up, then interleaved timed runs), the onnx_lm decode loop both time, what the machine
is and how busy other processes keep it, and the command-line plumbing (flags with environment twins).

The genai venv's Python imports this module too (through `bench.decode.speed --worker genai`) and
lacks the project's packages: keep top-level imports to the standard library and numpy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from glimp_common.env import env_flag, env_path, env_str

if TYPE_CHECKING:
    from export.shapes import ModelShape

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPT_TEXT = "Q: 48*7+19=? Think step by step.\n"  # 32 characters = 32 tokens (char tokenizer)


def bad_input(message: str) -> Exception:
    """The project's BadInputError, imported late: the genai worker's venv cannot import onnx_lm."""
    from glimp_common.errors import BadInputError

    return BadInputError(message)


def bench_error(message: str) -> Exception:
    """A GlimpError for a contender that failed to build or run."""
    from glimp_common.errors import GlimpError

    return GlimpError(message)


# ---------------------------------------------------------------------------------------------
# The benchmark model
# ---------------------------------------------------------------------------------------------


def ensure_export(
    work_dir: Path, shape: ModelShape | None = None, *, dtype: str = "float32", graph: str = "optimum",
    precision: str | None = None,
) -> Path:
    """The project's export of the benchmark checkpoint (built on first use, then reused).

    The checkpoint is a random Qwen3 of `shape` (default `SHAPES["bench-27m"]`, the measured
    anchor) with the project's char tokenizer. `graph` is export's ("optimum" keeps the optimum
    contender on its own graph; "fast" is export.fast_graph); `precision` "int8" / "int4"
    quantizes the weights (None: `dtype`).
    """
    from export.hf_export import ExportOptions, export_checkpoint
    from export.shapes import SHAPES, build_random_checkpoint

    checkpoint = work_dir / "checkpoint"
    if not (checkpoint / "config.json").is_file():
        build_random_checkpoint("qwen3", shape or SHAPES["bench-27m"], checkpoint)
    kind = precision or dtype
    # "onnx" / "onnx-float16": the folders earlier runs made (optimum's graph) keep their names.
    name = ("onnx" if kind == "float32" else f"onnx-{kind}") if graph == "optimum" else f"onnx-fast-{kind}"
    onnx_dir = work_dir / name
    if not (onnx_dir / "manifest.json").is_file():
        started = time.perf_counter()
        options = ExportOptions(
            dtype=dtype, graph=graph, quantize_int8=precision == "int8", quantize_int4=precision == "int4"
        )
        export_checkpoint(checkpoint, onnx_dir, options)
        log.info("exported %s in %.1f s", onnx_dir, time.perf_counter() - started)
    return onnx_dir


def prompt_ids(folder: Path, count: int) -> list[int]:
    """`count` token ids of PROMPT_TEXT (repeated as needed) under the folder's tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    # A character tokenizer gives a token per character, a real BPE one several characters per
    # token: repeat the text until it covers `count` tokens, whichever it is.
    ids: list[int] = []
    copies = count // len(PROMPT_TEXT) + 1
    while len(ids) < count:
        before = len(ids)
        ids = tokenizer.encode(PROMPT_TEXT * copies, add_special_tokens=False).ids
        if len(ids) == before:
            raise bad_input(f"the prompt gives no tokens under {folder}'s tokenizer")
        copies *= 2
    return list(ids[:count])


# ---------------------------------------------------------------------------------------------
# Timing protocol: every contender warms up, then the timed runs are interleaved (A B C, A B C,
# ...) so that load from other processes on a shared machine falls on all of them alike.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTiming:
    """One timed generation: prompt -> `new_tokens` greedy tokens."""

    total_s: float  # prefill + every decode step + sampling
    prefill_s: float | None  # None where the contender does not expose it (optimum generate)


@dataclass
class ContenderResult:
    """Every timed run of one contender plus the tokens it produced."""

    name: str
    runs: list[RunTiming]
    tokens: list[int]
    new_tokens: int
    notes: str = ""

    @property
    def tokens_per_s(self) -> float:
        """new tokens / median total time: the headline figure (prefill included)."""
        return self.new_tokens / statistics.median(r.total_s for r in self.runs)

    @property
    def decode_tokens_per_s(self) -> float | None:
        """(new tokens - 1) / median time after prefill: decode steps alone."""
        if any(r.prefill_s is None for r in self.runs) or self.new_tokens < 2:
            return None
        return (self.new_tokens - 1) / statistics.median(r.total_s - (r.prefill_s or 0.0) for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tokens_per_s": self.tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "notes": self.notes,
            "runs": [asdict(r) for r in self.runs],
            "tokens": self.tokens,
        }


GenerateFn = Callable[[], tuple[list[int], RunTiming]]


@dataclass(frozen=True)
class Contender:
    """A named way to turn the prompt into `new_tokens` greedy tokens, timed by the caller."""

    name: str
    generate: GenerateFn
    notes: str = ""


class TimingPlan(Protocol):
    """How many tokens each run makes and how many runs there are (both configs have these)."""

    @property
    def new_tokens(self) -> int: ...
    @property
    def repeats(self) -> int: ...
    @property
    def warmup(self) -> int: ...


def time_interleaved(contenders: Sequence[Contender], plan: TimingPlan) -> list[ContenderResult]:
    """Warm every contender up, then run them round-robin `plan.repeats` times."""
    for contender in contenders:
        for _ in range(plan.warmup):
            contender.generate()
    runs: dict[str, list[RunTiming]] = {c.name: [] for c in contenders}
    tokens: dict[str, list[int]] = {}
    for _ in range(plan.repeats):
        for contender in contenders:
            tokens[contender.name], timing = contender.generate()
            runs[contender.name].append(timing)
    return [_result(c, runs[c.name], tokens[c.name], plan.new_tokens) for c in contenders]


def _result(
    contender: Contender, runs: list[RunTiming], tokens: list[int], new_tokens: int
) -> ContenderResult:
    if len(tokens) != new_tokens:
        raise bench_error(f"{contender.name} produced {len(tokens)} tokens, {new_tokens} wanted")
    result = ContenderResult(contender.name, runs, tokens, new_tokens, contender.notes)
    log.info("%s: %.1f tok/s", contender.name, result.tokens_per_s)
    return result


def onnx_lm_generate(
    lm: Any, prompt: list[int], new_tokens: int, params: Any = None
) -> tuple[list[int], RunTiming]:
    """The project's loop: prefill, then one `decode_one` per token, drawn with `params`
    (onnx_lm.sampling.SamplingParams; None: greedy)."""
    from onnx_lm.sampling import GREEDY, sample_token

    params = GREEDY if params is None else params
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    cache = lm.new_cache()
    logits = lm.prefill(cache, prompt)
    prefill_s = time.perf_counter() - started
    tokens = [sample_token(logits, params, rng)]
    while len(tokens) < new_tokens:
        logits = lm.decode_one(cache, tokens[-1])
        tokens.append(sample_token(logits, params, rng))
    return tokens, RunTiming(time.perf_counter() - started, prefill_s)


# ---------------------------------------------------------------------------------------------
# The machine: what it is, and how much of it other processes use (it is shared)
# ---------------------------------------------------------------------------------------------


def machine_info(module: str = "bench.decode.speed") -> dict[str, Any]:
    """What the figures were measured on, and the command that measured them."""
    import onnxruntime as ort

    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join([Path(sys.executable).name, "-m", module, *sys.argv[1:]]),
    }


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return ""
    lines = cpuinfo.read_text().splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is no /proc."""
    stat = Path("/proc/stat")
    if not stat.is_file():
        return None
    fields = [int(v) for v in stat.read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_cpu_s() -> float:
    """CPU seconds of this process and its children: the waited-for ones (os.times) and the ones
    still running (a contender's worker, such as onnxruntime-genai's, is not waited for until the
    run ends: without it, its CPU would count as another process's load)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system + _live_children_cpu_s()


def _live_children_cpu_s() -> float:
    """user + system CPU seconds of the running descendants of this process, from /proc."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # Fields after the command's closing parenthesis: state, ppid, ... utime (12), stime (13).
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile, or not readable
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    me, total = os.getpid(), 0.0
    for pid in cpu:
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor not in (me, 0, 1):
            ancestor = parents.get(ancestor)
        if ancestor == me:
            total += cpu[pid]
    return total


class LoadMeter:
    """Share of all CPUs that *other* processes kept busy between creation and `others_share()`."""

    def __init__(self) -> None:
        self._start = _cpu_jiffies()
        self._own_start = _own_cpu_s()

    def others_share(self) -> float | None:
        end = _cpu_jiffies()
        if self._start is None or end is None or end[1] == self._start[1]:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (end[0] - self._start[0]) / hz
        total = (end[1] - self._start[1]) / hz
        return max(0.0, (busy - (_own_cpu_s() - self._own_start)) / total)


def wait_for_idle(timeout_s: float, *, busy_below: float = 0.15, window_s: float = 2.0) -> None:
    """Wait (up to `timeout_s`) for a `window_s` window in which the CPUs were mostly idle."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meter = LoadMeter()
        time.sleep(window_s)
        share = meter.others_share()
        if share is None or share < busy_below:
            return
        log.info("other processes keep %.0f%% of the CPUs busy; waiting", share * 100)
    if timeout_s > 0:
        log.warning("the CPUs did not go idle within %.0f s; timing under load", timeout_s)


# ---------------------------------------------------------------------------------------------
# Command line and output files
# ---------------------------------------------------------------------------------------------


class EnvFlags:
    """Adds flags whose defaults come from `<prefix>_<FLAG>` environment variables.

    Every flag then works unchanged from a CI job's environment; the help names the variable.
    """

    def __init__(self, parser: argparse.ArgumentParser, prefix: str) -> None:
        self._parser = parser
        self._prefix = prefix

    def value(self, flag: str, kind: Callable[[str], Any], default: str, text: str = "") -> None:
        """`flag` of type `kind`; its variable, else `default`, gives the default."""
        var = self._var(flag)
        self._parser.add_argument(
            flag, type=kind, default=kind(env_str(var, default)), help=_help(text, f"env {var}")
        )

    def optional_path(self, flag: str, text: str) -> None:
        """A folder flag that defaults to None unless its variable names one."""
        var = self._var(flag)
        default = env_path(var)
        self._parser.add_argument(flag, type=Path, default=default, help=_help(text, f"env {var}"))

    def switch(self, flag: str, text: str) -> None:
        """An on/off flag; its variable set to 1/true/yes/on turns it on (glimp_common.env.env_flag)."""
        var = self._var(flag)
        on = env_flag(var)
        self._parser.add_argument(flag, action="store_true", default=on, help=_help(text, f"env {var}=1"))

    def _var(self, flag: str) -> str:
        return f"{self._prefix}_{flag.removeprefix('--').replace('-', '_').upper()}"


def _help(text: str, env: str) -> str:
    return f"{text} ({env})" if text else env


def run_main(
    module: str,
    doc: str,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
) -> int:
    """`python -m <module>`: parse the flags `configure` adds, set up logging, then `run`."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    configure(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


def write_md_json(out_dir: Path, stem: str, markdown: str, data: dict[str, Any]) -> tuple[Path, Path]:
    """`stem`.md and `stem`.json in `out_dir` (created when missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md.write_text(markdown, encoding="utf-8")
    js.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return md, js
