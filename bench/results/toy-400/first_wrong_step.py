"""Where the SLM's first wrong step goes wrong, and what its first-token entropy says about it.

The measurement behind "Why the accuracy target is missed" in README.md. Run from the
repository root: `python bench/results/toy-400/first_wrong_step.py` (about 10 s on 2 cores).
The SLM alone, greedy, through the project's step loop (the same first-token entropy the router
uses), on the test problems; each step is compared with the reference step of the problem file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_client import AlwaysLocal, EdgeRouter, RouterConfig, StepSettings
from onnx_lm import CausalLM, SessionConfig

PAIR = Path("models/toy-pair")


def main() -> None:
    slm = CausalLM.load(PAIR / "slm", SessionConfig(providers="cpu", intra_op_threads=1))
    settings = StepSettings(temperature=0.0, top_p=1.0, seed=0)
    router = EdgeRouter(slm, None, RouterConfig(policy=AlwaysLocal(), steps=settings, answer_by="none"))
    first_wrong = []  # (first-token entropy, first character right, written, reference)
    for line in (PAIR / "data/test.jsonl").read_text().splitlines():
        problem = json.loads(line)
        run = router.answer(problem["question"])
        for step, reference in zip(run.steps, problem["steps"], strict=False):
            if step.text != reference:
                first_wrong.append((step.entropy_nats, step.text[:1] == reference[:1], step.text, reference))
                break
    right_first = [row for row in first_wrong if row[1]]
    wrong_first = [row for row in first_wrong if not row[1]]
    print(f"problems whose SLM chain has a wrong step: {len(first_wrong)}")
    print(f"first wrong step with the right first character: {len(right_first)}, "
          f"median first-token entropy {np.median([r[0] for r in right_first]):.3f} nats")
    print(f"first wrong step with a wrong first character: {len(wrong_first)}, "
          f"median first-token entropy {np.median([r[0] for r in wrong_first]):.3f} nats")
    for tau in (0.05, 0.1, 0.2, 0.3):
        print(f"tau {tau}: entropy >= tau at {sum(r[0] >= tau for r in first_wrong)} of {len(first_wrong)} "
              f"first wrong steps; {sum(r[0] >= tau for r in right_first)} of {len(right_first)} "
              "with the right first character")
    print("examples (entropy, written, reference):",
          [(round(r[0], 3), r[2], r[3]) for r in right_first[:6]])


if __name__ == "__main__":
    main()
