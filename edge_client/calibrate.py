"""Calibration: the entropy threshold that sends a requested share of steps to the LLM.

Users think in budgets ("a fifth of the steps to the cloud"), not nats. `calibrate` runs the SLM
alone over a set of questions, collects the first-token entropy of every step, and picks tau so
that the requested share of those steps has H >= tau. The file keeps every entropy seen, so
`TargetShare.from_calibration` can derive tau for any other share from the same file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edge_client.loop import EdgeRouter
from edge_client.policies import AlwaysLocal, check_share
from glimp_common.errors import BadInputError

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 1


@dataclass(frozen=True)
class Calibration:
    """The first-token entropies of an SLM's steps over a question set, and the tau for a share."""

    tau: float  # nats: steps with H >= tau go to the LLM
    target_share: float  # the share of cloud steps tau was picked for
    steps: int  # steps the entropies come from
    slm_fingerprint: str  # sha256 of the SLM folder's manifest.json
    entropies_nats: tuple[float, ...]  # every step's first-token entropy, sorted ascending
    questions: int = 0
    format_version: int = CALIBRATION_VERSION

    def __post_init__(self) -> None:
        check_share(self.target_share)
        if self.format_version != CALIBRATION_VERSION:
            raise BadInputError(
                f"calibration format_version {self.format_version} is not supported; "
                "run `glimp calibrate` again"
            )
        if not self.entropies_nats or len(self.entropies_nats) != self.steps:
            raise BadInputError(
                "calibration has no step entropies (or a wrong count); run `glimp calibrate` again"
            )

    def tau_for(self, share: float) -> float:
        """tau that sends `share` of the calibration steps to the LLM: the (1 - share) quantile."""
        check_share(share)
        if share == self.target_share:
            return self.tau
        return tau_for_share(self.entropies_nats, share)

    def to_json(self) -> str:
        data = asdict(self)
        data["entropies_nats"] = list(self.entropies_nats)
        return json.dumps(data, indent=1) + "\n"

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path | str) -> Calibration:
        """Read a file written by `glimp calibrate`; BadInputError naming what is wrong."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["entropies_nats"] = tuple(float(h) for h in data["entropies_nats"])
            return cls(**data)
        except FileNotFoundError as exc:
            raise BadInputError(
                f"calibration file {path} does not exist; run `glimp calibrate` first"
            ) from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, BadInputError):
                raise
            raise BadInputError(
                f"{path} is not a calibration file ({exc}); run `glimp calibrate` again"
            ) from exc

    def check_slm(self, slm_dir: Path | str) -> None:
        """Warn when the calibration was made with a different SLM (the tau would mean little)."""
        try:
            fingerprint = slm_fingerprint(slm_dir)
        except OSError:
            return  # not a model folder: loading it reports that clearly
        if fingerprint != self.slm_fingerprint:
            log.warning(
                "the calibration was made with another SLM than %s; its tau may not hit the share", slm_dir
            )


def tau_for_share(entropies_nats: Sequence[float], share: float) -> float:
    """The smallest tau with exactly round(share * n) of the entropies >= tau (ties aside)."""
    check_share(share)
    ordered = np.sort(np.asarray(entropies_nats, dtype=np.float64))
    if ordered.size == 0:
        raise BadInputError("no step entropies to calibrate on; give questions the SLM can reason about")
    cloud = int(round(share * ordered.size))
    if cloud == 0:
        # Just above the largest entropy seen: no calibration step goes to the cloud.
        return float(np.nextafter(ordered[-1], np.inf))
    return float(ordered[ordered.size - cloud])


def slm_fingerprint(slm_dir: Path | str) -> str:
    """sha256 of the SLM's manifest.json: cheap, and it changes with every export."""
    return hashlib.sha256((Path(slm_dir) / "manifest.json").read_bytes()).hexdigest()


def read_questions(path: Path | str, limit: int | None = None) -> list[str]:
    """Questions of a JSONL file (one `{"id": ..., "question": ...}` per line)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"question file {path} does not exist")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            questions.append(str(record["question"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadInputError(f"{path}:{number} is not a JSON object with a \"question\" ({exc})") from exc
        if limit is not None and len(questions) >= limit:
            break
    if not questions:
        raise BadInputError(f"{path} holds no questions")
    return questions


def calibrate(router: EdgeRouter, questions: Iterable[str], share: float) -> Calibration:
    """Run the router's SLM alone (always-local, no final answer) over `questions`.

    Returns the calibration for `share` (in [0, 1], else BadInputError); every step's
    first-token entropy is kept so other shares can be derived from the same file.
    """
    check_share(share)
    config = replace(router.config, policy=AlwaysLocal(), answer_by="none")
    router = EdgeRouter(router.slm, None, config)
    entropies: list[float] = []
    count = 0
    for count, question in enumerate(questions, start=1):
        result = router.answer(question)
        entropies.extend(step.entropy_nats for step in result.steps)
        log.info("calibration question %d: %d steps", count, len(result.steps))
    ordered = tuple(sorted(entropies))
    return Calibration(
        tau=tau_for_share(ordered, share), target_share=float(share), steps=len(ordered),
        slm_fingerprint=slm_fingerprint(router.slm.folder), entropies_nats=ordered, questions=count,
    )
