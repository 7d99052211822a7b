"""`python -m bench.figures`: the README's "Measured here" figures, each recorded by a command.

    python -m bench.figures record export   # tiny Qwen3 / Llama exports: time and parity; int8 size
    python -m bench.figures record cloud    # a real local Triton: ready time, uplink, a step's timings
    python -m bench.figures record link     # the link's fault and wire-byte tests, their recorded figures
    python -m bench.figures record demo     # `glimp demo`, its output
    python -m bench.figures render figures  # a README block (figures, toy-400, demo) from the records

Each `record` writes `bench/results/readme/NAME.json` (the command, the machine, the date, the
figures). `render` builds a README block from those files and the recorded runs beside them
(decode speed, the GPU check, the 400-problem benchmark, the toy pair's figures.json);
`tests/docs/test_readme_figures.py` fails when a block in the README differs from its rendering,
so no figure there lacks a recorded source.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
RECORDS = RESULTS / "readme"
TOY_LLM = REPO / "models" / "toy-pair" / "llm"
# README row label -> the systems of bench/results/toy-400 it shows (two: "a / b" in every cell).
TOY_ROWS = {
    "SLM alone": ("slm",),
    "LLM alone, one call": ("llm one-call",),
    "LLM alone, step by step (paper's baseline)": ("llm steps",),
    "GlimpRouter, share 0.2": ("glimp share=0.2",),
    "GlimpRouter, share 0.4": ("glimp share=0.4",),
    "random @ share 0.2 / 0.4": ("random @share=0.2", "random @share=0.4"),
    "step-average entropy @ share 0.2 / 0.4": ("step-avg @share=0.2", "step-avg @share=0.4"),
    "generate-then-verify @ share 0.2 / 0.4": ("verify @share=0.2", "verify @share=0.4"),
}

Figures = dict[str, Any]


def record_export(work: Path) -> Figures:
    """Export tiny random Qwen3 and Llama checkpoints (fp32, and int8 for Qwen3) with parity proofs."""
    from export.hf_export import ExportOptions, export_checkpoint
    from export.shapes import SHAPES, build_random_checkpoint

    figures: Figures = {}
    for family in ("qwen3", "llama", "qwen3"):  # the first export pays the imports: timed again last
        checkpoint = build_random_checkpoint(family, SHAPES["tiny"], work / f"{family}-checkpoint")
        out = work / f"{family}-fp32"
        started = time.perf_counter()
        manifest = export_checkpoint(checkpoint, out, ExportOptions(force=True))
        parity = manifest.parity["model"]
        figures[family] = {
            "export_s": time.perf_counter() - started,
            "max_abs_logit_diff": parity["max_abs_logit_diff"],
            "max_abs_logit_diff_decode": parity["max_abs_logit_diff_decode"],
            "greedy_matched": parity["greedy_matched"], "greedy_steps": parity["greedy_steps"],
            "model_bytes": _model_bytes(out),
        }
    checkpoint = work / "qwen3-checkpoint"
    int8 = export_checkpoint(checkpoint, work / "qwen3-int8", ExportOptions(quantize_int8=True, force=True))
    parity = int8.parity["model"]
    figures["qwen3_int8"] = {
        "model_bytes": _model_bytes(work / "qwen3-int8"), "top1_agreed": parity["top1_agreed"],
        "greedy_steps": parity["greedy_steps"], "max_abs_logit_diff": parity["max_abs_logit_diff"],
    }
    return figures


def _model_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))


def record_cloud(work: Path) -> Figures:
    """Uplink and a step's server-side timings after a 2,000-token transcript (tiny Qwen3 with a 4k
    window); start-to-ready of the tiny Qwen3 and three of the toy LLM."""
    from bench.e2e.cloud_figures import measure
    from cloud_service.launcher import local_server
    from export.hf_export import ExportOptions, export_checkpoint
    from export.shapes import SHAPES, build_random_checkpoint

    # The tiny shape with a 4k window, so that a 2,000-token transcript fits.
    shape = dataclasses.replace(SHAPES["tiny"], max_position_embeddings=4096)
    checkpoint = build_random_checkpoint("qwen3", shape, work / "qwen3-checkpoint")
    tiny = work / "qwen3-fp32"
    export_checkpoint(checkpoint, tiny, ExportOptions(force=True))
    figures: Figures = {"tiny_qwen3": measure(tiny, transcript_tokens=2000, steps=5, max_tokens=10)}
    ready = []
    for run in range(3):
        with local_server(TOY_LLM, work / f"toy-repo-{run}", token=None) as server:
            ready.append(server.ready_s or 0.0)
    figures["toy_llm_start_to_ready_s"] = ready
    return figures


LINK_TESTS = {
    "restart": "tests/link/test_link_faults.py::test_restart_resumes_cloud_steps_with_one_full_resend",
    "wire": "tests/link/test_link_emulated.py::test_counted_bytes_against_the_wire",
}


def record_link(work: Path, restarts: int = 3) -> Figures:
    """Run the link tests that record figures (pytest's junit XML keeps their properties)."""
    runs: dict[str, list[dict[str, dict[str, str]]]] = {}
    for name, test in LINK_TESTS.items():
        for run in range(restarts if name == "restart" else 1):
            xml = work / f"{name}-{run}.xml"
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test,
                            f"--junitxml={xml}", "-o", "junit_family=xunit1"], cwd=REPO, check=True)
            runs.setdefault(name, []).append(_properties(xml))
    restart = [float(r[k]["ready_to_first_cloud_step_s"]) for r in runs["restart"] for k in r]
    wire = {case: {k: int(v) for k, v in props.items()} for case, props in runs["wire"][0].items()}
    return {"breaker_s": _tests_breaker_s(), "ready_to_first_cloud_step_s": restart, "wire": wire}


def _properties(xml: Path) -> dict[str, dict[str, str]]:
    """testcase name -> its recorded properties."""
    cases = ET.parse(xml).getroot().iter("testcase")
    return {case.get("name", ""): {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
            for case in cases}


def _tests_breaker_s() -> float:
    """`BREAKER_S` of tests/link/link_helpers.py, the link tests' breaker (read, not imported)."""
    tree = ast.parse((REPO / "tests" / "link" / "link_helpers.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "BREAKER_S" for t in node.targets):
            return float(ast.literal_eval(node.value))
    raise LookupError("tests/link/link_helpers.py defines no BREAKER_S")


def record_demo(work: Path) -> Figures:
    """`glimp demo` as a new user runs it: its whole output."""
    glimp = Path(sys.executable).with_name("glimp")
    done = subprocess.run([str(glimp), "demo"], cwd=REPO, capture_output=True, text=True, check=True,
                          timeout=600)
    return {"stdout": done.stdout}


RECORDERS: dict[str, Callable[[Path], Figures]] = {
    "export": record_export, "cloud": record_cloud, "link": record_link, "demo": record_demo,
}


def record(name: str) -> Path:
    """Run one recorder and write its file; return the path."""
    from bench.e2e.machine import machine_info, now_utc

    with tempfile.TemporaryDirectory(prefix=f"glimp_figures_{name}_") as folder:
        figures = RECORDERS[name](Path(folder))
    RECORDS.mkdir(parents=True, exist_ok=True)
    path = RECORDS / f"{name}.json"
    document = {"command": f"python -m bench.figures record {name}", "date_utc": now_utc(),
                "machine": machine_info(), "figures": figures}
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return path


# ---- the README table -------------------------------------------------------------------------


def load(name: str) -> Figures:
    figures: Figures = json.loads((RECORDS / f"{name}.json").read_text(encoding="utf-8"))["figures"]
    return figures


def _range(values: list[float], unit: str = " s") -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}{unit}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}{unit}"


def _export_rows() -> list[tuple[str, str]]:
    e = load("export")
    q, llama, int8 = e["qwen3"], e["llama"], e["qwen3_int8"]
    return [
        ("export, tiny Qwen3 / Llama (fp32) [export.json]",
         f"{q['export_s']:.1f} / {llama['export_s']:.1f} s per export once imports are warm; max logit "
         f"difference {q['max_abs_logit_diff']:.1e} / {llama['max_abs_logit_diff']:.1e}; "
         f"{q['greedy_matched']}/{q['greedy_steps']} and {llama['greedy_matched']}/{llama['greedy_steps']} "
         "greedy tokens identical with and without past KV"),
        ("int8 dynamic weights, tiny Qwen3 [export.json]",
         f"model {q['model_bytes'] / 1e6:.2f} MB → {int8['model_bytes'] / 1e6:.2f} MB; top-1 agreement "
         f"{int8['top1_agreed']}/{int8['greedy_steps']} (random weights have near-flat logits)"),
    ]


def _cloud_rows() -> list[tuple[str, str]]:
    c = load("cloud")
    t = c["tiny_qwen3"]
    return [
        (f"uplink for one step after a {t['held_tokens']:,.0f}-token transcript (tiny Qwen3, 4k window, "
         "char tokenizer) [cloud.json]",
         f"{t['delta_bytes_up']:,.0f} B delta vs {t['full_resend_bytes_up']:,.0f} B full resend "
         f"({t['full_resend_bytes_up'] / t['delta_bytes_up']:.1f}x, median of {t['steps']:.0f})"),
        ("`glimp serve` to ready (a real inference answered) [cloud.json]",
         f"tiny Qwen3 {t['start_to_ready_s']:.2f} s; toy LLM {_range(c['toy_llm_start_to_ready_s'])} "
         f"({len(c['toy_llm_start_to_ready_s'])} starts)"),
        (f"a cloud step after that transcript, server side (tiny Qwen3, median of {t['steps']:.0f}) "
         "[cloud.json]",
         f"prefill {t['server_prefill_tokens']:.0f} new tokens in {1e3 * t['server_prefill_s']:.1f} ms "
         f"({t['server_reused_tokens']:,.0f} reused), decode {t['server_decode_tokens']:.0f} tokens in "
         f"{1e3 * t['server_decode_s']:.1f} ms"),
    ]


def _link_rows() -> list[tuple[str, str]]:
    link = load("link")
    restart = link["ready_to_first_cloud_step_s"]
    plain = next(v for k, v in link["wire"].items() if "plain" in k)
    up_x = plain["wire_bytes_up"] / plain["message_bytes_up"]
    up_err = plain["estimate_up"] / plain["wire_bytes_up"] - 1
    down_err = plain["estimate_down"] / plain["wire_bytes_down"] - 1
    return [
        ("cloud back after a restart → first successful cloud step [link.json]",
         f"median {statistics.median(restart):.2f} s (range {_range(restart)}, {len(restart)} restarts) "
         f"with a {link['breaker_s']:g} s breaker"),
        ("counted vs wire bytes, one question over the emulated link [link.json]",
         f"message bytes alone undercount (wire/message {up_x:.2f} up); with gRPC/HTTP2 framing "
         f"estimated, within {abs(up_err):.1%} up, {abs(down_err):.1%} down"),
    ]


def _decode_rows() -> list[tuple[str, str]]:
    decode = json.loads((RESULTS / "decode_speed.json").read_text(encoding="utf-8"))
    rate = {c["name"]: c["tokens_per_s"] for c in decode["contenders"]}
    genai = rate["onnxruntime-genai"]
    overhead = {(o["vocab_size"], o["sampling"]): o["fraction"] for o in decode["routing_overhead"]}
    sampled = "T=0.6, top-p=0.95, partial sort (proposed)"
    gpu = json.loads((RESULTS / "gpu_check.json").read_text(encoding="utf-8"))
    fp32 = next(c for c in gpu["checks"] if c["name"] == "fp32: CUDA vs CPU")["figures"]
    speed = {s["name"]: s["tokens_per_s"] for s in gpu["speed"]}
    builder = "onnx_lm on genai builder's graph"
    return [
        ("decode tok/s, 27.3M Qwen3, batch 1, 2 threads [decode_speed.json]",
         f"onnx_lm {rate['onnx_lm'] / genai:.2f}x onnxruntime-genai on optimum's graph; "
         f"{rate[builder] / genai:.2f}x on the graph genai's builder writes"),
        ("routing overhead (probe entropy + sampling) per 32-token step [decode_speed.json]",
         f"{overhead[(4096, sampled)]:.2%} at a 4k vocabulary; {overhead[(151936, sampled)]:.2%} at "
         "Qwen3's 152k vocabulary (partial-sort nucleus)"),
        ("H200 (CUDA EP, IO binding) [gpu_check.json]",
         f"KV cache stays on the GPU; fp32 {speed['fp32 on cuda']:.0f} tok/s, fp16 "
         f"{speed['fp16 on cuda']:.0f} tok/s on the 27.3M model; CUDA vs CPU greedy tokens "
         "identical, but the fp32 logit check **failed** its tolerance "
         f"({fp32['max_abs_logit_diff_prefill']:.3f} > {fp32['tolerance']}; not re-run: no GPU lent since)"),
    ]


def render_figures() -> str:
    """The README's "Measured here" table, from the recorded files."""
    rows = _export_rows() + _cloud_rows() + _link_rows() + _decode_rows()
    lines = ["| what [recorded in bench/results/…] | figure |", "|---|---|"]
    return "\n".join(lines + [f"| {what} | {figure} |" for what, figure in rows])


def render_demo() -> str:
    """The question, the steps and the summary of the recorded `glimp demo` (not its set-up lines)."""
    stdout: str = load("demo")["stdout"]
    shown = stdout[stdout.index("question:"):].rstrip("\n")
    return f"```\n{shown}\n```"


def render_toy() -> str:
    """The README's table of the recorded 400-problem run, from its results.json."""
    document = json.loads((RESULTS / "toy-400" / "results.json").read_text(encoding="utf-8"))
    systems = {s["name"]: s for s in document["systems"]}
    baseline_s = systems["llm steps"]["latency_mean_s"]

    def cells(system: dict[str, Any]) -> list[str]:
        one_call = system["family"] == "llm-one-call"
        wasted = system["wasted_tokens_per_cloud_step"]
        return [
            f"{100 * system['accuracy']:.1f}", f"{1e3 * system['latency_mean_s']:.1f}",
            f"{system['latency_mean_s'] / baseline_s:.2f}",
            "-" if one_call else _share_percent(system["cloud_step_share"]),
            f"{system['bytes_up_per_problem']:.0f}", "-" if wasted is None else f"{wasted:.2f}",
        ]

    lines = ["| system | accuracy % | latency ms | × LLM steps | cloud steps % | up B/problem | "
             "wasted tok/cloud step |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, names in TOY_ROWS.items():
        columns = zip(*(cells(systems[name]) for name in names), strict=True)
        lines.append(f"| {label} | " + " | ".join(" / ".join(column) for column in columns) + " |")
    return "\n".join(lines)


def _share_percent(share: float) -> str:
    """20.3 for 0.203; the two ends whole: 0 and 100."""
    return f"{100 * share:.0f}" if share in (0.0, 1.0) else f"{100 * share:.1f}"


def render_toy_pair() -> str:
    """The toy pair's acceptance figures, from `models/toy-pair/figures.json` (`glimp toy build`)."""
    pair = json.loads((REPO / "models" / "toy-pair" / "figures.json").read_text(encoding="utf-8"))
    slm, llm = pair["slm"], pair["llm"]

    def means(side: dict[str, Any]) -> str:
        return f"{side['mean_entropy_right_nats']:.3f} / {side['mean_entropy_wrong_nats']:.3f} nats"

    return "\n".join([
        f"| on the {pair['test_problems']} held-out test problems (exported ONNX, greedy) | SLM | LLM |",
        "|---|---:|---:|",
        f"| exact answers | {100 * slm['accuracy']:.2f} % | {100 * llm['accuracy']:.2f} % |",
        "| first-token entropy AUROC, wrong vs right steps (teacher-forced) | "
        f"{slm['entropy_auroc']:.3f} | {llm['entropy_auroc']:.3f} |",
        f"| mean first-token entropy on right / wrong steps | {means(slm)} | {means(llm)} |",
    ])


BLOCKS: dict[str, Callable[[], str]] = {
    "figures": render_figures, "toy-400": render_toy, "demo": render_demo, "toy-pair": render_toy_pair,
}


def markers(name: str) -> tuple[str, str]:
    """The comments around block `name` in the README."""
    return f"<!-- {name}: rendered by `python -m bench.figures render {name}` -->", f"<!-- {name}: end -->"


def render(name: str) -> str:
    """Block `name` with its markers, as the README must hold it."""
    begin, end = markers(name)
    return f"{begin}\n{BLOCKS[name]()}\n{end}"


def readme_block(readme: str, name: str) -> str:
    """Block `name` as the README holds it (markers included); ValueError when it has none."""
    begin, end = markers(name)
    start, stop = readme.index(begin), readme.index(end) + len(end)
    return readme[start:stop]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.figures", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    recorder = verbs.add_parser("record", help="run one recorder and write bench/results/readme/NAME.json")
    recorder.add_argument("name", choices=sorted(RECORDERS))
    renderer = verbs.add_parser("render", help="print a README block rendered from the records")
    renderer.add_argument("name", choices=sorted(BLOCKS))
    args = parser.parse_args(argv)
    print(f"written {record(args.name)}" if args.verb == "record" else render(args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
