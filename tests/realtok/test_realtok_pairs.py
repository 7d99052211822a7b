"""The whole path on the genuine Qwen3 and Llama 3 tokenizers, a different family on each side.

Scripted random checkpoints (scripted.py) write a known chain, so every assertion is exact: the
prompt as transformers renders it, steps that end inside merged tokens, thinking opened and
closed by each side with its own markers, the answer, the streamed text, and no resync.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from edge_client import EdgeRouter, RouterConfig, StepSettings
from edge_client.in_process_llm import InProcessLLM
from edge_client.policies import Decision, Probe, Route, RoutingPolicy
from edge_client.trace import AnswerStarted, Event, RunResult, StepStarted, TextWritten
from onnx_lm import GREEDY, CausalLM, ChatMessage, SessionConfig
from onnx_lm.manifest import Manifest

pytestmark = pytest.mark.slow  # two exports over a 152k / 128k vocabulary (about 15-30 s each here)

CPU = SessionConfig(providers="cpu", intra_op_threads=1)
QUESTION = "What is 6*7?"
SETTINGS = StepSettings(temperature=0.6, top_p=0.95, max_step_tokens=16, budget_tokens=64,
                        answer_max_tokens=8, seed=0)


@dataclass(frozen=True)
class CloudAt(RoutingPolicy):
    """Sends the steps at `indices` to the LLM, the rest to the SLM (the scripted entropy is ~0)."""

    indices: tuple[int, ...] = (1,)
    name: ClassVar[str] = "cloud-at"

    def before_step(self, probe: Probe) -> Decision:
        return Decision(Route.CLOUD if probe.step_index in self.indices else Route.EDGE)


def run_pair(slm_dir: Path, llm_dir: Path) -> tuple[RunResult, list[Event]]:
    events: list[Event] = []
    llm = InProcessLLM(CausalLM.load(llm_dir, CPU))
    router = EdgeRouter.from_folders(slm_dir, llm, RouterConfig(CloudAt(), SETTINGS), CPU)
    return router.answer(QUESTION, on_event=events.append), events


def streamed(events: list[Event]) -> tuple[list[str], str]:
    """(text streamed per step, text streamed for the answer), from the events alone."""
    steps: list[str] = []
    answer: str | None = None
    for event in events:
        if isinstance(event, StepStarted):
            steps.append("")
        elif isinstance(event, AnswerStarted):
            answer = ""
        elif isinstance(event, TextWritten):
            if answer is None:
                steps[-1] += event.text
            else:
                answer += event.text
    return steps, answer or ""


# ---- render parity ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["qwen3", "llama3"])
@pytest.mark.parametrize("system", [None, "You are a careful reasoner."])
def test_prompts_render_and_tokenize_as_transformers(
    name: str, system: str | None, request: pytest.FixtureRequest
) -> None:
    from transformers import AutoTokenizer

    folder = request.getfixturevalue(f"{name}_dir")
    codec = CausalLM.load(folder, CPU).tokenizer
    messages = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", QUESTION)]
    as_dicts = [{"role": m.role, "content": m.content} for m in messages]
    reference = AutoTokenizer.from_pretrained(str(folder))
    text = reference.apply_chat_template(as_dicts, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=True)
    ids = reference.apply_chat_template(as_dicts, tokenize=True, add_generation_prompt=True,
                                        enable_thinking=True)
    assert codec.render_template(messages) == text
    assert codec.encode(text) == list(ids)
    # Qwen3's template leaves thinking closed; the runtime opens it (Llama 3 has no thinking block).
    opened = "<think>\n" if name == "qwen3" else ""
    assert text.endswith("<|im_start|>assistant\n" if name == "qwen3" else "<|end_header_id|>\n\n")
    assert codec.render_prompt(messages) == text + opened


def test_manifests_carry_each_familys_markers(qwen3_dir: Path, llama3_dir: Path) -> None:
    qwen, llama = Manifest.load(qwen3_dir), Manifest.load(llama3_dir)
    assert (qwen.think_start, qwen.think_end, qwen.vocab_size) == ("<think>", "</think>", 151669)
    assert qwen.eos_token_ids == (151645, 151643)
    assert (llama.think_start, llama.think_end, llama.vocab_size) == (None, None, 128256)
    assert llama.eos_token_ids == (128009, 128001)  # <|eot_id|> ends a turn
    for manifest in (qwen, llama):
        assert manifest.parity["model"]["passed"] is True


def test_exports_show_no_false_mistral_regex_warning(qwen3_dir: Path, llama3_dir: Path) -> None:
    """transformers 4.57.6 flags any >100k-vocabulary checkpoint it saved itself as Mistral's."""
    import logging

    from scripted import EXPORT_LOGS, TokenizerLogRecords

    assert set(EXPORT_LOGS) == {"qwen3", "llama3"}
    assert [m for logs in EXPORT_LOGS.values() for m in logs if "incorrect regex pattern" in m] == []
    assert logging.getLogger(TokenizerLogRecords.LOGGER).filters == []  # silenced during exports only


# ---- the whole loop, a different family on each side ----------------------------------------

def test_qwen3_slm_with_llama3_llm(qwen3_dir: Path, llama3_dir: Path) -> None:
    result, events = run_pair(qwen3_dir, llama3_dir)
    steps = [(s.writer, s.text, s.stop) for s in result.steps]
    # ".\n\n" and ":\n\n" are single tokens: each step ends inside one, its "." / ":" kept.
    assert steps == [("edge", "First step.", "delimiter"), ("cloud", "Then more:", "delimiter"),
                     ("edge", "</think>", "think_end")]
    assert result.thinking_stop == "think_end"
    assert (result.answer_writer, result.answer) == ("cloud", "42")
    assert result.transcript == "First step.\n\nThen more:\n\n</think>42"
    step_texts, answer_text = streamed(events)
    assert step_texts == [s.text for s in result.steps] and answer_text == result.answer
    assert "\ufffd" not in "".join(step_texts) + answer_text


def test_the_qwen3_slm_probes_after_its_opened_thinking_block(qwen3_dir: Path) -> None:
    """The SLM continues "<|im_start|>assistant\\n<think>\\n": its first probe is reasoning."""
    from edge_client.policies import AlwaysLocal

    slm = CausalLM.load(qwen3_dir, CPU)
    probes: list[Probe] = []

    @dataclass(frozen=True)
    class Recording(AlwaysLocal):
        def before_step(self, probe: Probe) -> Decision:
            probes.append(probe)
            return super().before_step(probe)

    router = EdgeRouter(slm, None, RouterConfig(Recording(), SETTINGS, answer_by="slm"))
    result = router.answer(QUESTION)
    prompt_ids = slm.tokenizer.encode(slm.tokenizer.render_prompt([ChatMessage("user", QUESTION)]))
    assert prompt_ids[-2:] == [151667, 198]  # "<think>", "\n": the block is open before step 0
    assert slm.tokenizer.token_text(probes[0].token_id) == "First" and probes[0].entropy_nats < 1e-3
    assert [s.text for s in result.steps] == ["First step.", "Then more:", "</think>"]
    assert "<think>" not in result.transcript and result.answer == "\n\n42"


def test_llama3_slm_with_qwen3_llm_closes_the_llms_own_thinking(qwen3_dir: Path, llama3_dir: Path) -> None:
    """The SLM has no thinking markers; the Qwen3 LLM opened its block, so it closes it itself."""
    result, events = run_pair(llama3_dir, qwen3_dir)
    steps = [(s.writer, s.text, s.stop) for s in result.steps]
    assert steps == [("edge", "First step.", "delimiter"), ("cloud", "Then more:", "delimiter"),
                     ("edge", "", "eos")]
    assert result.thinking_stop == "eos"
    # The LLM's view ended "...:\n\n</think>" (its own marker), so its script writes "\n\n42";
    # left open, the script would write the marker itself first ("</think>\n\n42").
    assert (result.answer_writer, result.answer) == ("cloud", "\n\n42")
    step_texts, answer_text = streamed(events)
    assert step_texts == [s.text for s in result.steps] and answer_text == result.answer


# ---- characters split across byte-level tokens ------------------------------------------------

def test_a_character_split_over_tokens_is_never_shown_half(qwen3_dir: Path) -> None:
    from onnx_lm import LMContext, StopCriteria, decode_until, make_rng

    lm = CausalLM.load(qwen3_dir, CPU)
    codec = lm.tokenizer
    first_bytes = 82912  # "龘" is tokens [82912, 246]
    assert codec.decode([first_bytes]).endswith("\ufffd")  # the tokenizer alone shows U+FFFD
    assert codec.decode_complete([first_bytes]) == "" and codec.decode_complete([first_bytes, 246]) == "龘"

    prompt = codec.render_prompt([ChatMessage("user", QUESTION)])
    ctx = LMContext(lm)
    pieces: list[str] = []
    ctx.sync(prompt)
    whole = decode_until(ctx, GREEDY, StopCriteria((), 8), make_rng(GREEDY), first_token=first_bytes,
                         on_text=pieces.append)
    assert (whole.text, whole.stop_reason.value, "".join(pieces)) == ("龘", "eos", "龘")

    ctx.sync(prompt)
    pieces.clear()
    cut = decode_until(ctx, GREEDY, StopCriteria((), 1), make_rng(GREEDY), first_token=first_bytes,
                       on_text=pieces.append)
    # The cap falls inside the character: its bytes are dropped, not shown as U+FFFD.
    assert (cut.text, cut.stop_reason.value, pieces, cut.num_tokens) == ("", "max_tokens", [], 1)

    ctx.sync(prompt)
    two = decode_until(ctx, GREEDY, StopCriteria((), 2), make_rng(GREEDY), first_token=first_bytes)
    assert two.text == "龘" and two.num_tokens == 2
    ctx.append_token(246)  # the partial character's tokens now sit in the KV ...
    stats = ctx.sync(prompt + "")  # ... and the next sync to the stored text drops them
    assert ctx.token_ids == codec.encode(prompt) and stats.prefill_tokens == 1


def test_the_cloud_engine_opens_and_closes_its_own_thinking(qwen3_dir: Path) -> None:
    """The ONNX cloud engine renders with the Qwen3 LLM's template, opened, and closes before answering."""
    import os
    import secrets

    from cloud_service.engines.onnx import Engine
    from protos import edge_cloud_v1_pb2 as pb

    engine = Engine(CausalLM.load(qwen3_dir, CPU))
    messages = [pb.ChatMessage(role="user", content=QUESTION)]

    def create(action: pb.Action, new_text: str) -> pb.StepResult:
        request = pb.StepRequest(
            protocol_version=1, context_id=secrets.token_hex(16), client_key=os.urandom(32), create=True,
            messages=messages, action=action, new_text=new_text, max_tokens=8,
        )
        return engine.handle(request).result

    assert create(pb.WRITE_STEP, "").text == "First step."  # its view starts inside "<think>\n"
    # A transcript from an SLM without markers: the engine closes its own block, not committed.
    answer = create(pb.WRITE_ANSWER, "First step.\n\nThen more:\n\n")
    assert answer.text == "\n\n42"
    assert answer.state.length_bytes == len(b"First step.\n\nThen more:\n\n\n\n42")


@pytest.mark.parametrize("count", [32, 512])
def test_the_decode_bench_prompt_has_its_length_under_a_real_tokenizer(real_tokenizers: dict[str, Path],
                                                                       count: int) -> None:
    from bench.decode.common import prompt_ids

    for name in ("qwen3", "llama3"):
        assert len(prompt_ids(real_tokenizers[name], count)) == count, name
