"""Building a standard Triton model repository for an exported LLM folder.

    <repository>/glimp_llm/config.pbtxt   python backend, one CPU-kind instance, the parameters
    <repository>/glimp_llm/1/model.py     the adapter (cloud_service/triton_model/1/model.py)
    <repository>/glimp_llm/llm/           the exported model folder (a copy, or a symlink)

A copied repository is self-contained: the same folder runs under `glimp serve` here and in
NVIDIA's Triton container (see cloud_service/README.md).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from cloud_service.serving_config import ServingConfig
from glimp_common.errors import BadInputError
from onnx_lm.manifest import Manifest
from protos.contract import MODEL_NAME

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "triton_model"


@dataclass(frozen=True)
class RepositorySettings(ServingConfig):
    """What goes into config.pbtxt (a `ServingConfig`), and how the model folder is placed."""

    link_model: bool = False  # symlink the model folder instead of copying it (not self-contained)

    def __post_init__(self) -> None:
        super().__post_init__()
        if Path(self.model_dir).name != self.model_dir or self.model_dir in (".", ".."):
            raise BadInputError(f"the model folder inside the repository must be a plain name, "
                                f"got {self.model_dir!r}")


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
    (target / "config.pbtxt").write_text(settings.render_pbtxt(), encoding="utf-8")
    if settings.link_model:
        (target / settings.model_dir).symlink_to(model_dir, target_is_directory=True)
    else:
        shutil.copytree(model_dir, target / settings.model_dir)
        # Exports are written through mkdtemp (mode 0700): a container's server user must read them.
        (target / settings.model_dir).chmod(0o755)
    log.info("model repository for %s written to %s", model_dir, repository)
    return repository

