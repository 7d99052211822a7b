"""The real-size run's report: the figures side by side and each target of issue 13, met or not."""

from __future__ import annotations

from typing import Any

GB = 1e9


def _export_rows(report: dict[str, Any]) -> list[str]:
    rows = [
        "| export | wall s | peak RSS GB (largest process / tree) | on disk GB | read per token GB |",
        "|---|---|---|---|---|",
    ]
    for name, v in report["variants"].items():
        e = v["export"]
        rows.append(
            f"| {name} | {e['wall_s']:.0f} | {e['maxrss_bytes'] / GB:.2f} / {e['tree_peak_bytes'] / GB:.2f} "
            f"| {v['stored_bytes'] / GB:.2f} | {v['bytes_per_token'] / GB:.3f} |"
        )
    if "genai_build" in report:
        e = report["genai_build"]
        rows.append(
            f"| onnxruntime-genai builder fp32 | {e['wall_s']:.0f} | {e['maxrss_bytes'] / GB:.2f} / "
            f"{e['tree_peak_bytes'] / GB:.2f} | | |"
        )
    return rows


def _decode_rows(report: dict[str, Any]) -> list[str]:
    rows = [
        "| model | greedy tok/s | sampled tok/s | sampled / greedy | limit tok/s | greedy / limit "
        "| top-1 vs fp32 | router overhead / step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in report["variants"].items():
        g, s = v["greedy"]["decode_tokens_per_s"], v["sampled"]["decode_tokens_per_s"]
        rows.append(
            f"| onnx_lm {name} | {g:.2f} | {s:.2f} | {s / g:.3f} | {v['limit_tokens_per_s']:.2f} | "
            f"{v['greedy_fraction_of_limit']:.2f} | {v['top1_agreement_with_fp32']:.3f} | "
            f"{v['routing_overhead_per_step']:.2%} ({v['probe_ms']:.2f} ms) |"
        )
        if "genai" in v:
            genai = v["genai"]["decode_tokens_per_s"]
            rows.append(
                f"| onnxruntime-genai fp32 | {genai:.2f} | | | {v['limit_tokens_per_s']:.2f} | "
                f"{genai / v['limit_tokens_per_s']:.2f} | | |"
            )
    for name, v in report.get("llama_cpp", {}).items():
        if isinstance(v, dict) and "greedy" in v:
            g, s = v["greedy"]["decode_tokens_per_s"], v["sampled"]["decode_tokens_per_s"]
            rows.append(
                f"| llama.cpp {name} | {g:.2f} | {s:.2f} | {s / g:.3f} | {v['limit_tokens_per_s']:.2f} | "
                f"{v['greedy_fraction_of_limit']:.2f} | | |"
            )
    return rows


def _targets(report: dict[str, Any]) -> list[str]:
    v = report["variants"]
    lines = []
    for name, x in v.items():
        e = x["export"]
        peak = max(e["maxrss_bytes"], e["tree_peak_bytes"]) / GB
        ok = e["wall_s"] <= 180 and peak <= 4.0
        lines.append(
            f"- export {name} <= 3 min and <= 4 GB: {'met' if ok else 'NOT met'} "
            f"({e['wall_s']:.0f} s, {peak:.2f} GB)"
        )
    if "fp32" in v and "genai" in v["fp32"]:
        ratio = v["fp32"]["greedy"]["decode_tokens_per_s"] / v["fp32"]["genai"]["decode_tokens_per_s"]
        lines.append(
            f"- fp32 >= 1.0x onnxruntime-genai: {'met' if ratio >= 1.0 else 'NOT met'} ({ratio:.2f}x)"
        )
    for name in ("int8", "int4"):
        if name in v:
            f = v[name]["greedy_fraction_of_limit"]
            lines.append(f"- {name} >= 0.8 of its memory limit: {'met' if f >= 0.8 else 'NOT met'} ({f:.2f})")
    if "int4" in v and "fp32" in v:
        r = v["int4"]["greedy"]["decode_tokens_per_s"] / v["fp32"]["greedy"]["decode_tokens_per_s"]
        lines.append(f"- int4 >= 3x fp32: {'met' if r >= 3 else 'NOT met'} ({r:.2f}x)")
    for name, x in v.items():
        r = x["sampled_over_greedy"]
        lines.append(f"- {name} sampled >= 0.95x greedy: {'met' if r >= 0.95 else 'NOT met'} ({r:.3f})")
        if name != "fp32":
            lines.append(
                f"- {name} top-1 agreement with fp32 over {len(v['fp32']['greedy']['tokens'])} greedy "
                f"tokens: {x['top1_agreement_with_fp32']:.3f} (reported)"
            )
    return lines


def format_report(report: dict[str, Any], graph: str) -> str:
    m, bw, c = report["machine"], report["bandwidth"], report["checkpoint"]
    share = m.get("others_cpu_share_whole_run")
    lines = [
        f"# Real-size run: random Qwen3-0.6B ({c['parameters'] / 1e6:.1f}M parameters), graph {graph}",
        "",
        f"machine: {m['cpu']}, {m['logical_cpus']} CPUs; other processes used "
        f"{'?' if share is None else f'{share:.0%}'} of the CPUs over the run; {m['date_utc']} UTC",
        "bandwidth (numpy, GB/s): "
        + ", ".join(f"{k.removesuffix('_gb_s')} {val:.1f}" for k, val in bw.items()),
        "limit = read bandwidth at the decode's thread count / bytes of weights read per token",
        "",
        *_export_rows(report),
        "",
        *_decode_rows(report),
        "",
        "## Targets (issue 13)",
        *_targets(report),
    ]
    llama = report.get("llama_cpp", {})
    if "failed" in llama or "skipped" in llama:
        lines += ["", f"llama.cpp: {llama.get('failed') or llama.get('skipped')}"]
    return "\n".join(lines) + "\n"
