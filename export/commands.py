"""`glimp export CHECKPOINT_DIR OUT_DIR`: a local Hugging Face checkpoint -> ONNX model folder.

Prints the export time, the parity figures against transformers and the folder written.
Every flag has an environment twin (GLIMP_EXPORT_*).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from glimp_common.env import env_flag, env_str, unescaped
from onnx_lm.manifest import GRAPH_KINDS, ROLES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint_dir", type=Path, help="local Hugging Face model folder (config.json, weights)"
    )
    parser.add_argument("out_dir", type=Path, help="model folder to write (must not exist, unless --force)")
    parser.add_argument(
        "--fp16",
        action="store_true",
        default=env_flag("GLIMP_EXPORT_FP16"),
        help="float16 weights and KV cache, for GPUs (env GLIMP_EXPORT_FP16)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        default=env_flag("GLIMP_EXPORT_INT8"),
        help="int8 weights, for CPU devices (fast graph: MatMulNBits block 32; optimum: dynamic); "
        "its accuracy cost is reported (env GLIMP_EXPORT_INT8)",
    )
    parser.add_argument(
        "--int4",
        action="store_true",
        default=env_flag("GLIMP_EXPORT_INT4"),
        help="int4 weights (MatMulNBits, block 32; embedding and output layer too), for CPU devices; "
        "fast graph only; its accuracy cost is reported (env GLIMP_EXPORT_INT4)",
    )
    parser.add_argument(
        "--graph",
        choices=GRAPH_KINDS,
        default=env_str("GLIMP_EXPORT_GRAPH"),
        help="fast: GroupQueryAttention with rotary inside and fused norms, written from the "
        "safetensors (onnxruntime-genai's graph); optimum: optimum's exporter. Default: fast where "
        "the checkpoint fits it, else optimum (env GLIMP_EXPORT_GRAPH)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        default=env_flag("GLIMP_EXPORT_FORCE"),
        help="replace an existing OUT_DIR (env GLIMP_EXPORT_FORCE)",
    )
    parser.add_argument(
        "--step-delimiter",
        default=env_str("GLIMP_EXPORT_STEP_DELIMITER"),
        help="text between reasoning steps; default a blank line, as in the paper; "
        "escapes such as \\n are decoded (env GLIMP_EXPORT_STEP_DELIMITER)",
    )
    parser.add_argument(
        "--think-end",
        default=env_str("GLIMP_EXPORT_THINK_END"),
        help="end-of-thinking marker; default </think> when the tokenizer has it "
        "(env GLIMP_EXPORT_THINK_END)",
    )
    parser.add_argument(
        "--prompt-template",
        default=env_str("GLIMP_EXPORT_PROMPT_TEMPLATE"),
        help="plain prompt with a {question} placeholder, used instead of the chat "
        "template (env GLIMP_EXPORT_PROMPT_TEMPLATE)",
    )
    parser.add_argument(
        "--role",
        choices=ROLES,
        default=env_str("GLIMP_EXPORT_ROLE", "any"),
        help="which side the model is meant for (env GLIMP_EXPORT_ROLE)",
    )
    parser.add_argument(
        "--no-parity",
        action="store_true",
        default=env_flag("GLIMP_EXPORT_NO_PARITY"),
        help="skip the parity check against transformers (env GLIMP_EXPORT_NO_PARITY)",
    )


def _print_parity(parity: dict[str, Any], kind: str) -> None:
    for label, key in (("float32 export", "float32_export"), (kind, "model")):
        figures = parity.get(key)
        if isinstance(figures, str):
            print(f"parity ({label}): {figures}")
        elif figures:
            tol = figures["tolerance"]
            bound = "not enforced" if tol is None else f"tolerance {tol:.3g}"
            steps = figures["greedy_steps"]
            print(
                f"parity ({label}, {figures['provider']}): max |logit diff| "
                f"{figures['max_abs_logit_diff']:.3g} ({bound}), "
                f"greedy {figures['greedy_matched']}/{steps} tokens identical, "
                f"top-1 agreement {figures['top1_agreed']}/{steps}"
            )


def run(args: argparse.Namespace) -> int:
    from export.hf_export import ExportOptions, export_checkpoint

    options = ExportOptions(
        dtype="float16" if args.fp16 else "float32",
        quantize_int8=args.int8,
        quantize_int4=args.int4,
        graph=args.graph,
        force=args.force,
        step_delimiter=unescaped(args.step_delimiter),
        think_end=args.think_end,
        prompt_template=unescaped(args.prompt_template),
        role=args.role,
        check_parity=not args.no_parity,
    )
    start = time.perf_counter()
    manifest = export_checkpoint(args.checkpoint_dir, args.out_dir, options)
    elapsed_s = time.perf_counter() - start
    kind = manifest.quantization or manifest.dtype
    print(f"exported {manifest.architecture} ({kind}, {manifest.graph} graph) in {elapsed_s:.1f} s")
    _print_parity(manifest.parity, kind)
    print(f"wrote {args.out_dir}")
    return 0
