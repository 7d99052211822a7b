"""A Triton model repository serving a Hugging Face checkpoint folder with the vLLM engine.

    <repository>/glimp_llm/config.pbtxt   python backend, decoupled, one KIND_CPU instance
    <repository>/glimp_llm/1/model.py     cloud_service/vllm/model.py
    <repository>/glimp_llm/llm/           the checkpoint folder (a copy, or a symlink)
    <repository>/glimp_llm/draft/         a draft checkpoint, when speculative decoding uses one

config.pbtxt is rendered from `VllmSettings` (no template edited by regex); strings are written
with protobuf text-format escapes, so a "\\n" delimiter survives. Self-contained when copied: the
same folder runs under the pytriton tritonserver here and in NVIDIA's Triton container (which needs
the GPU `vllm` package and this project installed in its Python).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from protos.contract import MODEL_NAME, REPLY_TENSOR, REQUEST_TENSOR

MODEL_FILE = Path(__file__).resolve().parent / "model.py"
MODEL_SUBDIR = "llm"
DRAFT_SUBDIR = "draft"
NGRAM = "ngram"  # speculative decoding by prompt lookup: no draft model
_HF_MARKERS = ("config.json",)
_WEIGHTS = ("*.safetensors", "*.bin")
_MIN_KV_BYTES = 16 << 20  # below this vLLM cannot hold one window of the toy model's blocks


@dataclass(frozen=True)
class VllmSettings:
    kv_cache_bytes: int = 1 << 30  # vLLM's KV space for every context together (kv_cache_memory_bytes)
    max_model_len: int = 0  # 0: the checkpoint's own window
    max_num_seqs: int = 64  # requests vLLM batches at once
    dtype: str = "auto"
    prompt_template: str = "{question}"  # for checkpoints without a chat template
    step_delimiter: str = "\n"
    max_contexts: int = 65536
    text_budget_bytes: int = 256 << 20
    idle_ttl_s: float = 900.0
    link_model: bool = False  # symlink the checkpoint instead of copying it (not self-contained)
    die_with_parent: bool = True  # engine processes get PR_SET_PDEATHSIG (see hygiene.py)
    # Speculative decoding inside each cloud step: None (off), NGRAM, or a draft checkpoint folder
    # sharing the model's tokenizer; `speculative_tokens` proposed per step, verified in one pass.
    speculative: str | None = None
    speculative_tokens: int = 3

    def __post_init__(self) -> None:
        if self.kv_cache_bytes < _MIN_KV_BYTES:
            raise ValueError(f"vLLM's KV cache needs at least {_MIN_KV_BYTES >> 20} MiB, got "
                             f"{self.kv_cache_bytes / (1 << 20):.1f} MiB")
        if self.max_model_len < 0 or self.max_num_seqs < 1 or not self.step_delimiter:
            raise ValueError(f"bad vLLM settings: {self}")
        if "{question}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {question}")
        if not 1 <= self.speculative_tokens <= 16:
            raise ValueError(f"speculative tokens must be in 1..16, got {self.speculative_tokens}")
        if self.speculative not in (None, NGRAM) and not is_hf_checkpoint(self.speculative):
            raise ValueError(f"the draft model {self.speculative} is not a Hugging Face checkpoint folder "
                             "(config.json + weights); or use speculative decoding by n-gram: ngram")

    @property
    def speculative_kind(self) -> str:
        """"" (off), "ngram" or "draft": the SPECULATIVE parameter."""
        return "" if self.speculative is None else NGRAM if self.speculative == NGRAM else "draft"

    def parameters(self) -> dict[str, str]:
        return {
            "MODEL_DIR": MODEL_SUBDIR,
            "KV_CACHE_BYTES": str(int(self.kv_cache_bytes)),
            "MAX_MODEL_LEN": str(self.max_model_len),
            "MAX_NUM_SEQS": str(self.max_num_seqs),
            "DTYPE": self.dtype,
            "PROMPT_TEMPLATE": self.prompt_template,
            "STEP_DELIMITER": self.step_delimiter,
            "MAX_CONTEXTS": str(self.max_contexts),
            "TEXT_BUDGET_BYTES": str(self.text_budget_bytes),
            "IDLE_TTL_S": _number(self.idle_ttl_s),
            "DIE_WITH_PARENT": "1" if self.die_with_parent else "0",
            "SPECULATIVE": self.speculative_kind,
            "SPECULATIVE_TOKENS": str(self.speculative_tokens),
        }


def is_hf_checkpoint(folder: Path | str) -> bool:
    folder = Path(folder)
    return all((folder / m).is_file() for m in _HF_MARKERS) and any(
        next(folder.glob(pattern), None) is not None for pattern in _WEIGHTS)


def has_chat_template(folder: Path | str) -> bool:
    """Whether the checkpoint's tokenizer brings a chat template (transformers reads these places)."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(isinstance(config, dict) and config.get("chat_template"))


def render_config(settings: VllmSettings) -> str:
    """config.pbtxt for the vLLM engine (protobuf text format)."""
    lines = [
        "# The glimp LLM on vLLM inside Triton's python backend: one serialized glimp.v1.StepRequest",
        "# in, one serialized glimp.v1.StepReply out (protos/edge_cloud_v1.proto), decoupled: every",
        "# request is answered by exactly one response flagged final. Clients use ModelStreamInfer.",
        f"name: {_quote(MODEL_NAME)}",
        'backend: "python"',
        "# Triton does not batch: vLLM does (continuous batching across every context).",
        "max_batch_size: 0",
        "model_transaction_policy { decoupled: true }",
        f"input [ {{ name: {_quote(REQUEST_TENSOR)} data_type: TYPE_STRING dims: [ 1 ] }} ]",
        f"output [ {{ name: {_quote(REPLY_TENSOR)} data_type: TYPE_STRING dims: [ 1 ] }} ]",
        "# One instance: contexts (text + digest) live in its process; vLLM's prefix cache holds the KV.",
        "instance_group [ { count: 1 kind: KIND_CPU } ]",
    ]
    for key, value in settings.parameters().items():
        lines.append(f"parameters: {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def build_repository(model_dir: Path | str, repository: Path | str,
                     settings: VllmSettings | None = None, *, force: bool = False) -> Path:
    settings = settings or VllmSettings()
    model_dir, repository = Path(model_dir).resolve(), Path(repository)
    if not is_hf_checkpoint(model_dir):
        raise ValueError(f"{model_dir} is not a Hugging Face checkpoint folder (config.json + weights)")
    target = repository / MODEL_NAME
    if target.exists() or target.is_symlink():
        if not force:
            raise FileExistsError(f"{target} already exists")
        shutil.rmtree(target)
    (target / "1").mkdir(parents=True)
    shutil.copy2(MODEL_FILE, target / "1" / "model.py")
    (target / "config.pbtxt").write_text(render_config(settings), encoding="utf-8")
    _place(model_dir, target / MODEL_SUBDIR, settings.link_model)
    if settings.speculative_kind == "draft":
        assert settings.speculative is not None
        _place(Path(settings.speculative).resolve(), target / DRAFT_SUBDIR, settings.link_model)
    return repository


def _place(folder: Path, where: Path, link: bool) -> None:
    if link:
        where.symlink_to(folder, target_is_directory=True)
    else:
        shutil.copytree(folder, where)


def _quote(value: str) -> str:
    """A protobuf text-format string literal (C escapes; JSON's escapes are a subset it accepts)."""
    return json.dumps(value, ensure_ascii=True)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
