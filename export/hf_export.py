"""Local Hugging Face checkpoint (Qwen2 / Qwen3 / Llama) -> ONNX model folder with a manifest.

The folder holds `model.onnx` (with KV cache), the tokenizer files and `manifest.json`. The graph
is either the fast one `export.fast_graph` writes from the safetensors (GroupQueryAttention, fused
norms; the default where the checkpoint fits it) or optimum's exporter's (`graph="optimum"`).
The export is written into a temporary folder beside `out_dir`, proven against transformers (see
`export.parity`), and only then renamed to `out_dir`, so a failed export never leaves a
half-written folder and never touches an existing one without `force`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from export import parity, quantize
from export.checkpoint_weights import CheckpointWeights, has_safetensors
from export.decoder_spec import DecoderSpec, decoder_spec
from export.fast_graph import build_fast_graph
from glimp_common.errors import BadInputError, ModelContractError
from onnx_lm.manifest import (
    GRAPH_KINDS,
    ROLES,
    SUPPORTED_ARCHITECTURES,
    SUPPORTED_DTYPES,
    KVLayout,
    Manifest,
)

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
DEFAULT_STEP_DELIMITER = "\n\n"  # the paper's blank line between reasoning steps
DEFAULT_THINK_START = "<think>"
DEFAULT_THINK_END = "</think>"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
CONFIG_FILES = ("config.json", "generation_config.json")  # kept beside the model for reference
EXPORT_TOOLS = ("optimum", "optimum-onnx", "transformers", "torch", "onnx", "onnxruntime", "onnxruntime-gpu")
INT8 = "int8-dynamic"
FAST_QUANTIZATION = {"int8": "int8-block32", "int4": "int4-block32"}  # MatMulNBits, block 32


@dataclass(frozen=True)
class ExportOptions:
    """How to export a checkpoint."""

    dtype: str = "float32"  # "float16" for GPU
    quantize_int8: bool = False  # int8 weights for CPU devices (fast: MatMulNBits; optimum: dynamic)
    quantize_int4: bool = False  # int4 weights in MatMulNBits, block 32 (fast graph only)
    force: bool = False  # overwrite an existing out_dir
    step_delimiter: str | None = None  # None -> "\n\n" (the paper)
    think_end: str | None = None  # None -> "</think>" if the tokenizer knows it, else None
    prompt_template: str | None = None  # plain "{question}" template instead of the chat template
    role: str = "any"  # "slm" / "llm" / "any"
    check_parity: bool = True
    graph: str | None = None  # "fast" / "optimum"; None: fast where the checkpoint fits it, else optimum

    def __post_init__(self) -> None:
        if self.dtype not in SUPPORTED_DTYPES:
            raise BadInputError(f"dtype {self.dtype!r} is not supported; choose one of {SUPPORTED_DTYPES}")
        if self.graph is not None and self.graph not in GRAPH_KINDS:
            raise BadInputError(f"graph {self.graph!r} is not one of {', '.join(GRAPH_KINDS)}")
        if self.quantize_int8 and self.quantize_int4:
            raise BadInputError("choose one of --int8 and --int4, not both")
        if (self.quantize_int8 or self.quantize_int4) and self.dtype != "float32":
            raise BadInputError("quantization starts from float32 weights: use --int8/--int4 without --fp16")
        if self.quantize_int4 and self.graph == "optimum":
            raise BadInputError("int4 (MatMulNBits) is written by the fast graph only: use --graph fast")
        if self.role not in ROLES:
            raise BadInputError(f"role {self.role!r} is not one of {', '.join(ROLES)}")
        if self.step_delimiter == "":
            raise BadInputError("step delimiter must not be empty; leave it unset for the paper's '\\n\\n'")
        if self.prompt_template is not None and "{question}" not in self.prompt_template:
            raise BadInputError(
                f"prompt template {self.prompt_template!r} has no '{{question}}' placeholder; add one"
            )

    @property
    def precision(self) -> str:
        """What the exported graph computes in: "float32", "float16", "int8" or "int4"."""
        if self.quantize_int4:
            return "int4"
        return "int8" if self.quantize_int8 else self.dtype


@dataclass(frozen=True)
class _GraphChoice:
    """Which graph an export writes, and the checkpoint's spec when it is the fast one."""

    kind: str  # "fast" | "optimum"
    spec: DecoderSpec | None = None


def choose_graph(config: dict[str, Any], options: ExportOptions, checkpoint_dir: Path) -> _GraphChoice:
    """The graph to write: the one asked for, or fast unless the checkpoint does not fit it (its
    shapes, or weights only in pytorch_model.bin: optimum reads those, the fast graph does not).

    An explicit `graph="fast"` that the checkpoint cannot take raises BadInputError saying why.
    """
    if options.graph == "optimum":
        return _GraphChoice("optimum")
    try:
        spec = decoder_spec(config)
        if not has_safetensors(checkpoint_dir):
            raise BadInputError(
                f"{checkpoint_dir} has its weights only outside safetensors (e.g. pytorch_model.bin); the "
                "fast graph reads safetensors: re-save the checkpoint with safetensors, or export with "
                "--graph optimum")
        return _GraphChoice("fast", spec)
    except BadInputError as exc:
        if options.graph == "fast" or options.quantize_int4:
            raise
        logger.info("writing optimum's graph: %s", exc)
        return _GraphChoice("optimum")


def export_checkpoint(
    checkpoint_dir: Path, out_dir: Path, options: ExportOptions = ExportOptions()
) -> Manifest:
    """Export `checkpoint_dir` to the model folder `out_dir` and return its manifest.

    Raises BadInputError for a missing/unsupported checkpoint or an existing `out_dir` without
    `options.force`; ModelContractError when the export fails its parity check (nothing is
    written then).
    """
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    config = read_checkpoint_config(checkpoint_dir)
    choice = choose_graph(config, options, checkpoint_dir)
    _check_out_dir(out_dir, options.force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        with _without_false_mistral_warning():
            start = time.perf_counter()
            writer = _graph_writer(checkpoint_dir, choice)
            writer(tmp_dir / ONNX_FILE, "float32", None)
            logger.info("%s graph export took %.1f s", choice.kind, time.perf_counter() - start)
            _copy_checkpoint_files(checkpoint_dir, tmp_dir)
            figures = _convert_and_prove(checkpoint_dir, tmp_dir, options, writer, int(config["vocab_size"]))
            manifest = build_manifest(config, tmp_dir, options, figures, graph=choice.kind)
        manifest.save(tmp_dir)
        _publish(tmp_dir, out_dir, options.force)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return manifest


_MISTRAL_REGEX_WARNING = "with an incorrect regex pattern"
_TOKENIZER_LOGGER = "transformers.tokenization_utils_base"


class _DropFalseMistralWarning(logging.Filter):
    """Drops transformers' "incorrect regex pattern" warning, which is false for every export here.

    transformers 4.57.3 to 4.57.x (4.57.6 is pinned) warns about a Mistral tokenizer's regex for
    any local checkpoint whose config.json says it was saved by a transformers newer than 4.57.2,
    whatever its model_type: it skips the check only for older savers. Exports only accept
    Qwen2 / Qwen3 / Llama (`read_checkpoint_config`), never Mistral, and each export loads the
    tokenizer five times (optimum, parity, manifest), so it printed the false warning five times.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return _MISTRAL_REGEX_WARNING not in record.getMessage()


@contextmanager
def _without_false_mistral_warning() -> Iterator[None]:
    """Silence exactly that warning for the duration of an export (see _DropFalseMistralWarning)."""
    tokenizer_logger = logging.getLogger(_TOKENIZER_LOGGER)
    dropper = _DropFalseMistralWarning()
    tokenizer_logger.addFilter(dropper)
    try:
        yield
    finally:
        tokenizer_logger.removeFilter(dropper)


def read_checkpoint_config(checkpoint_dir: Path) -> dict[str, Any]:
    """config.json of a supported checkpoint; BadInputError saying what is wrong otherwise."""
    if not checkpoint_dir.is_dir():
        raise BadInputError(
            f"checkpoint directory {checkpoint_dir} does not exist; give a local Hugging Face model folder"
        )
    config_path = checkpoint_dir / "config.json"
    if not config_path.is_file():
        raise BadInputError(
            f"{checkpoint_dir} is not a Hugging Face checkpoint (no config.json); "
            "give the folder that holds config.json and the weights"
        )
    try:
        config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{config_path} is not valid JSON ({exc}); fix or re-download it") from exc
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise BadInputError(
            f"architecture {model_type!r} of {checkpoint_dir} is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return config


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not force:
        raise BadInputError(f"output folder {out_dir} already exists; use --force to overwrite it")
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"output path {out_dir} is a file, not a folder; choose another path")


# (dst, precision, fp32_graph): write the graph at `precision` to `dst`; `fp32_graph` is the proven
# fp32 graph of the same export (None while writing that one).
GraphWriterFn = Callable[[Path, str, Path | None], None]


def _graph_writer(checkpoint_dir: Path, choice: _GraphChoice) -> GraphWriterFn:
    """How to write the graph at a precision: the fast builder straight from the weights, or
    optimum's fp32 export and `export.quantize`'s conversions of it."""
    if choice.kind == "fast":
        spec = choice.spec
        assert spec is not None

        def fast(dst: Path, precision: str, fp32_graph: Path | None) -> None:
            build_fast_graph(checkpoint_dir, dst, spec, precision)

        return fast

    def optimum(dst: Path, precision: str, fp32_graph: Path | None) -> None:
        if fp32_graph is None:
            _run_optimum(checkpoint_dir, dst.parent)
        elif precision == "int8":
            quantize.quantize_int8(fp32_graph, dst)
        else:
            quantize.convert_fp16(fp32_graph, dst)

    return optimum


def _run_optimum(checkpoint_dir: Path, tmp_dir: Path) -> None:
    from optimum.exporters.onnx import main_export

    # fp32 always: real checkpoints are often stored in bf16; fp16/int8 are derived from fp32.
    # optimum's own validation is skipped: export.parity checks more (logits and greedy KV decode).
    main_export(
        str(checkpoint_dir),
        str(tmp_dir),
        task="text-generation-with-past",
        dtype="fp32",
        device="cpu",
        do_validation=False,
        local_files_only=True,
    )
    if not (tmp_dir / ONNX_FILE).is_file():
        raise ModelContractError(f"optimum wrote no {ONNX_FILE} for {checkpoint_dir}; see the log above")


def _copy_checkpoint_files(checkpoint_dir: Path, tmp_dir: Path) -> None:
    """Copy config and tokenizer; a checkpoint with only a slow tokenizer gets a tokenizer.json made."""
    for name in (*CONFIG_FILES, *TOKENIZER_FILES):
        if (checkpoint_dir / name).is_file():
            shutil.copy2(checkpoint_dir / name, tmp_dir / name)
    if (tmp_dir / "tokenizer.json").is_file():
        return
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(str(checkpoint_dir), use_fast=True).save_pretrained(str(tmp_dir))
    except Exception as exc:  # transformers raises many types for a missing/odd tokenizer
        raise BadInputError(
            f"{checkpoint_dir} has no tokenizer.json and no tokenizer transformers can convert ({exc}); "
            "add the checkpoint's tokenizer files"
        ) from exc
    if not (tmp_dir / "tokenizer.json").is_file():
        raise BadInputError(f"{checkpoint_dir}: could not produce tokenizer.json; add a fast tokenizer")


def _convert_and_prove(
    checkpoint_dir: Path, tmp_dir: Path, options: ExportOptions, writer: GraphWriterFn, vocab_size: int
) -> dict[str, Any]:
    """Prove the fp32 graph, write the asked precision, measure it; return manifest.parity.

    ONNX Runtime runs every graph first and closes its session; transformers loads only then, so
    an export holds one copy of the model at a time (a real-size export's peak is one model).
    """
    onnx_path = tmp_dir / ONNX_FILE
    precision = options.precision
    if not options.check_parity:
        _rewrite(onnx_path, precision, writer)
        return {"model": "not checked: parity check disabled (--no-parity)"}
    threads = _parity_threads(checkpoint_dir)
    runs = [parity.run_onnx(onnx_path, vocab_size, threads=threads)]
    if precision != "float32":
        _rewrite(onnx_path, precision, writer)
        providers = _parity_providers(precision)
        runs.append(parity.run_onnx(onnx_path, vocab_size, precision=precision, providers=providers,
                                    threads=threads))
    reference = parity.load_reference(checkpoint_dir)
    results = [parity.score(reference, run) for run in runs]
    for result in results:
        parity.require_parity(result, onnx_path)
    if len(results) == 1:
        return {"model": results[0].to_dict()}
    return {"model": results[1].to_dict(), "float32_export": results[0].to_dict()}


def _parity_threads(checkpoint_dir: Path) -> int:
    """parity.threads_for the checkpoint's size; ORT's default for a checkpoint without safetensors
    (optimum reads pytorch_model.bin too)."""
    try:
        return parity.threads_for(CheckpointWeights(checkpoint_dir).parameter_count())
    except BadInputError:
        return 0


def _parity_providers(precision: str) -> tuple[str, ...]:
    """fp16 is meant for GPUs: check it on CUDA when a GPU really runs; everything else on CPU."""
    if precision == "float16" and _cuda_works():
        return ("CUDAExecutionProvider", parity.CPU)
    return (parity.CPU,)


def _cuda_works() -> bool:
    import onnxruntime as ort

    from onnx_lm.providers import has_gpu_device

    return has_gpu_device() and "CUDAExecutionProvider" in ort.get_available_providers()


def _rewrite(onnx_path: Path, precision: str, writer: GraphWriterFn) -> None:
    """Replace the fp32 graph at `onnx_path` by its `precision` version (nothing for float32)."""
    if precision == "float32":
        return
    # Written under the final file name in a subfolder: an external data file is referenced by
    # name from inside the graph, so the graph must never be renamed after it is saved.
    staging = onnx_path.parent / "converted"
    staging.mkdir()
    writer(staging / onnx_path.name, precision, onnx_path)
    quantize.remove_onnx(onnx_path)
    for path in staging.iterdir():
        path.rename(onnx_path.parent / path.name)
    staging.rmdir()


def _publish(tmp_dir: Path, out_dir: Path, force: bool) -> None:
    """Rename the finished folder into place; an existing one (force) is swapped out, then removed."""
    old = None
    if out_dir.exists():
        if not force:  # appeared while exporting
            raise BadInputError(f"output folder {out_dir} already exists; use --force to overwrite it")
        old = out_dir.with_name(f".{out_dir.name}.old-{tmp_dir.name}")
        out_dir.rename(old)
    tmp_dir.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_manifest(
    config: dict[str, Any], folder: Path, options: ExportOptions, figures: dict[str, Any], *,
    graph: str = "optimum",
) -> Manifest:
    """The manifest of an export folder that already holds the tokenizer files."""
    tokenizer = _tokenizer_info(folder)
    heads = int(config["num_attention_heads"])
    kv = KVLayout(
        num_layers=int(config["num_hidden_layers"]),
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or int(config["hidden_size"]) // heads),
        dtype=options.dtype,
    )
    return Manifest(
        architecture=str(config["model_type"]),
        vocab_size=int(config["vocab_size"]),
        max_context_tokens=int(config.get("max_position_embeddings") or 0),
        dtype=options.dtype,
        kv=kv,
        eos_token_ids=_eos_ids(config, folder, tokenizer),
        step_delimiter=options.step_delimiter or DEFAULT_STEP_DELIMITER,
        think_end=(think_end := options.think_end or _default_think_end(tokenizer)),
        think_start=_think_start(tokenizer, think_end),
        tokenizer_fingerprint=tokenizer_fingerprint(folder),
        onnx_file=ONNX_FILE,
        bos_token_id=_first_id(config.get("bos_token_id"), tokenizer.get("bos_token_id")),
        pad_token_id=_first_id(config.get("pad_token_id"), tokenizer.get("pad_token_id")),
        # The runtime renders with the chat template when there is one: a plain template replaces it.
        chat_template=None if options.prompt_template else tokenizer.get("chat_template"),
        prompt_template=options.prompt_template,
        quantization=_quantization(options, graph),
        role=options.role,
        special_tokens=tokenizer["special_tokens"],
        export_tools=export_tool_versions(),
        parity=figures,
        graph=graph,
    )


def _quantization(options: ExportOptions, graph: str) -> str | None:
    if options.precision not in FAST_QUANTIZATION:
        return None
    return FAST_QUANTIZATION[options.precision] if graph == "fast" else INT8


def _tokenizer_info(folder: Path) -> dict[str, Any]:
    """Special tokens, their ids and the chat template, as transformers reads the folder."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    special = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
    for name, token in (("think_start", DEFAULT_THINK_START), ("think_end", DEFAULT_THINK_END)):
        if tok.convert_tokens_to_ids(token) not in (None, tok.unk_token_id):
            special.setdefault(name, token)
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    return {
        "special_tokens": special,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        "pad_token_id": tok.pad_token_id,
        "chat_template": template,
        "knows_think_end": "think_end" in special,
    }


def _default_think_end(tokenizer: dict[str, Any]) -> str | None:
    return DEFAULT_THINK_END if tokenizer["knows_think_end"] else None


def _think_start(tokenizer: dict[str, Any], think_end: str | None) -> str | None:
    """"<think>" for a tokenizer that knows the <think>...</think> pair (Qwen3, R1 distills): the
    runtime opens that block after the generation prompt when the template does not."""
    knows_pair = "think_start" in tokenizer["special_tokens"] and think_end == DEFAULT_THINK_END
    return DEFAULT_THINK_START if knows_pair else None


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def _first_id(*values: Any) -> int | None:
    for value in values:
        ids = _as_ids(value)
        if ids:
            return ids[0]
    return None


def _eos_ids(config: dict[str, Any], folder: Path, tokenizer: dict[str, Any]) -> tuple[int, ...]:
    """Union of the eos ids of generation_config.json, config.json and the tokenizer, in that order."""
    generation: dict[str, Any] = {}
    if (folder / "generation_config.json").is_file():
        generation = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    ids = [
        *_as_ids(generation.get("eos_token_id")),
        *_as_ids(config.get("eos_token_id")),
        *_as_ids(tokenizer.get("eos_token_id")),
    ]
    if not ids:
        raise BadInputError(
            f"{folder}: no eos token id in generation_config.json, config.json or the tokenizer; "
            "set eos_token_id in the checkpoint's config.json"
        )
    return tuple(dict.fromkeys(ids))


def tokenizer_fingerprint(folder: Path) -> str:
    """sha256 of tokenizer.json: equal fingerprints mean the two folders tokenize alike."""
    return hashlib.sha256((Path(folder) / "tokenizer.json").read_bytes()).hexdigest()


def export_tool_versions() -> dict[str, str]:
    """Installed versions of the packages that shaped the export (absent ones are left out)."""
    versions = {}
    for name in EXPORT_TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
