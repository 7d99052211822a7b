"""`manifest.json`: what a model folder holds and how to drive it.

Written by `export`, read by every runtime. The runtime trusts nothing else about a folder:
a folder without a valid manifest is rejected at load with a message naming the problem.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glimp_common.errors import BadInputError, ModelContractError

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
SUPPORTED_ARCHITECTURES = ("qwen2", "qwen3", "llama")
SUPPORTED_DTYPES = ("float32", "float16")
ROLES = ("slm", "llm", "any")
# Which graph the folder holds: "optimum" (optimum's text-generation-with-past export, ~140 nodes a
# layer) or "fast" (export.fast_graph: GroupQueryAttention with rotary inside and fused norms, the
# graph onnxruntime-genai's builder writes). Both take the same IO names; io_names checks each.
GRAPH_KINDS = ("optimum", "fast")


@dataclass(frozen=True)
class KVLayout:
    """Shape of the past key/value tensors: each is [batch, kv_heads, seq, head_dim]."""

    num_layers: int  # one key and one value tensor per layer
    num_kv_heads: int  # grouped-query attention: may be fewer than attention heads
    head_dim: int
    dtype: str  # element type of the KV tensors ("float32" or "float16")

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ModelContractError(f"manifest kv.{name} must be positive, got {getattr(self, name)}")

    def bytes_per_token(self) -> int:
        """Bytes of KV cache one token occupies (keys + values, all layers)."""
        item = 2 if self.dtype == "float16" else 4
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * item


@dataclass(frozen=True)
class Manifest:
    """Everything a runtime needs to know about an exported causal LM folder."""

    architecture: str  # "qwen2" | "qwen3" | "llama" (Hugging Face model_type)
    vocab_size: int  # rows of the logits; entropy is taken over all of them
    max_context_tokens: int  # max_position_embeddings of the checkpoint
    dtype: str  # weights/activations of the ONNX graph: "float32" | "float16"
    kv: KVLayout
    eos_token_ids: tuple[int, ...]  # any of these ends generation
    step_delimiter: str  # text between reasoning steps ("\n\n" in the paper, "\n" for the toy task)
    think_end: str | None  # end-of-thinking marker ("</think>"); None: thinking ends at EOS only
    tokenizer_fingerprint: str  # sha256 of tokenizer.json: two folders with equal ones tokenize alike
    onnx_file: str = "model.onnx"
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    chat_template: str | None = None  # Jinja template from the tokenizer config, if any
    prompt_template: str | None = None  # plain "{question}" format used instead of a chat template
    # "int8-dynamic" (optimum graph, MatMulInteger), "int8-block32" / "int4-block32" (fast graph,
    # MatMulNBits); None: float weights of `dtype`
    quantization: str | None = None
    role: str = "any"  # "slm" / "llm" when the folder was made for one side (the toy pair)
    # Start-of-thinking marker ("<think>"): the runtime opens the thinking block after the
    # generation prompt when the template leaves it closed (Qwen3). None: no thinking block.
    think_start: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)
    export_tools: dict[str, str] = field(default_factory=dict)  # package -> version used to export
    parity: dict[str, Any] = field(default_factory=dict)  # figures proven after export
    graph: str = "optimum"  # one of GRAPH_KINDS; folders exported before the fast graph are optimum's
    format_version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        if self.format_version != MANIFEST_VERSION:
            raise ModelContractError(
                f"manifest format_version {self.format_version} is not supported (expected "
                f"{MANIFEST_VERSION}); re-export the model with this version of the project"
            )
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ModelContractError(
                f"manifest architecture {self.architecture!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if self.dtype not in SUPPORTED_DTYPES:
            raise ModelContractError(f"manifest dtype {self.dtype!r} is not one of {SUPPORTED_DTYPES}")
        if self.vocab_size <= 0 or self.max_context_tokens <= 0:
            raise ModelContractError("manifest vocab_size and max_context_tokens must be positive")
        if not self.step_delimiter:
            raise ModelContractError("manifest step_delimiter must not be empty")
        if self.role not in ROLES:
            raise ModelContractError(f"manifest role {self.role!r} is not one of {ROLES}")
        if self.graph not in GRAPH_KINDS:
            raise ModelContractError(
                f"manifest graph {self.graph!r} is not one of {GRAPH_KINDS}; re-export the model"
            )
        if self.think_start is not None and not (self.think_start and self.think_end):
            raise ModelContractError(
                "manifest think_start needs a think_end (a thinking block that opens must close); "
                "re-export the model or remove think_start"
            )
        if self.chat_template is None and self.prompt_template is None:
            raise ModelContractError(
                "manifest has neither chat_template nor prompt_template: the runtime cannot render a prompt"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        try:
            data["kv"] = KVLayout(**data["kv"])
            data["eos_token_ids"] = tuple(data["eos_token_ids"])
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise ModelContractError(f"manifest is missing or has unknown fields: {exc}") from exc

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        """Read `<folder>/manifest.json`; raise ModelContractError naming what is wrong."""
        path = Path(folder) / MANIFEST_FILE
        if not Path(folder).is_dir():
            raise ModelContractError(f"model folder {folder} does not exist; export one with `glimp export`")
        if not path.is_file():
            raise ModelContractError(
                f"{path} is missing: {folder} is not an exported model folder; export one with `glimp export`"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelContractError(f"{path} is not valid JSON ({exc}); re-export the model") from exc
        return cls.from_dict(data)


_SIDES = {"slm": "small model on the edge", "llm": "large model"}


def check_role(folder: Path | str, wanted: str, *, given_as: str | None = None,
               fix: str = "swap the two folders") -> Manifest:
    """Read a folder's manifest and refuse one made for the other side (before loading weights).

    `wanted` is "slm" or "llm"; `given_as` names how the folder was given ("the model to serve"),
    default the side's name; `fix` is what the message tells the user to do. Raises BadInputError
    for the wrong side, ModelContractError for a folder that is not an exported model.
    """
    manifest = Manifest.load(Path(folder))
    if manifest.role not in (wanted, "any"):
        raise BadInputError(
            f"{folder} holds a model made for the {manifest.role.upper()} side (manifest role "
            f"{manifest.role!r}), but it was given as {given_as or 'the ' + _SIDES[wanted]}; {fix}"
        )
    return manifest
