"""Building a standard Triton model repository for an exported LLM folder.

    <repository>/glimp_llm/config.pbtxt   python backend, one CPU-kind instance, the parameters
    <repository>/glimp_llm/1/model.py     the adapter (cloud_service/triton_model/1/model.py)
    <repository>/glimp_llm/llm/           the exported model folder (a copy, or a symlink)

A copied repository is self-contained: the same folder runs under `glimp serve` here and in
NVIDIA's Triton container (see cloud_service/README.md).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnx_lm.errors import BadInputError, GlimpError
from onnx_lm.manifest import Manifest
from onnx_lm.providers import resolve_name
from protos.contract import MODEL_NAME

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "triton_model"
MODEL_SUBDIR = "llm"  # where the model folder goes inside the Triton model's folder


@dataclass(frozen=True)
class RepositorySettings:
    """What goes into config.pbtxt, and how the model folder is placed."""

    cache_budget_bytes: int = 2 << 30  # KV + text of every context together
    idle_ttl_s: float = 900.0  # a context unused this long is dropped
    providers: str = "auto"  # "auto" or comma-separated: cpu, cuda, tensorrt
    intra_op_threads: int = 0  # 0: ONNX Runtime's default
    link_model: bool = False  # symlink the model folder instead of copying it (not self-contained)

    def __post_init__(self) -> None:
        if self.cache_budget_bytes <= 0:
            raise BadInputError(f"cache budget must be > 0 bytes, got {self.cache_budget_bytes}")
        if not self.idle_ttl_s > 0:
            raise BadInputError(f"idle TTL must be > 0 s, got {self.idle_ttl_s}")
        if self.intra_op_threads < 0:
            raise BadInputError(f"intra-op threads must be >= 0, got {self.intra_op_threads}")
        for name in self.providers.split(","):
            if name.strip() != "auto":
                resolve_name(name.strip())  # raises BadInputError naming the valid ones

    def parameters(self) -> dict[str, str]:
        return {
            "MODEL_DIR": MODEL_SUBDIR,
            "CACHE_BUDGET_BYTES": str(self.cache_budget_bytes),
            "IDLE_TTL_S": repr(float(self.idle_ttl_s)),
            "PROVIDERS": self.providers,
            "INTRA_OP_THREADS": str(self.intra_op_threads),
        }


def build_repository(model_dir: Path | str, repository: Path | str,
                     settings: RepositorySettings | None = None, *, force: bool = False) -> Path:
    """Write a model repository serving `model_dir` under `repository`; return the repository path.

    Raises ModelContractError when `model_dir` is not an exported model folder, BadInputError
    when `repository` already holds the model and `force` is not set.
    """
    settings = settings or RepositorySettings()
    model_dir, repository = Path(model_dir).resolve(), Path(repository)
    Manifest.load(model_dir)  # refuse a folder the runtime could not load, before copying anything
    target = repository / MODEL_NAME
    if target.exists() or target.is_symlink():
        if not force:
            raise BadInputError(f"{target} already exists; choose another repository folder or use --force")
        shutil.rmtree(target)
    (target / "1").mkdir(parents=True)
    shutil.copy2(TEMPLATE_DIR / "1" / "model.py", target / "1" / "model.py")
    (target / "config.pbtxt").write_text(render_config(settings), encoding="utf-8")
    if settings.link_model:
        (target / MODEL_SUBDIR).symlink_to(model_dir, target_is_directory=True)
    else:
        shutil.copytree(model_dir, target / MODEL_SUBDIR)
        # Exports are written through mkdtemp (mode 0700): a container's server user must read them.
        (target / MODEL_SUBDIR).chmod(0o755)
    log.info("model repository for %s written to %s", model_dir, repository)
    return repository


def render_config(settings: RepositorySettings) -> str:
    """The template config.pbtxt with `settings`' parameter values."""
    text = (TEMPLATE_DIR / "config.pbtxt").read_text(encoding="utf-8")
    for key, value in settings.parameters().items():
        pattern = re.compile(rf'(key: "{re.escape(key)}".*?string_value: ")[^"]*(")', re.DOTALL)
        text, count = pattern.subn(_substitute(value), text, count=1)
        if count != 1:
            raise GlimpError(f"the config template has no parameter {key}; reinstall glimprouter")
    return text


def _substitute(value: str) -> Callable[[re.Match[str]], str]:
    # A function, not a replacement string: values are taken literally (no backslash escapes).
    return lambda match: match.group(1) + value + match.group(2)
