"""The ONNX LM runtime on a real exported tiny Qwen3 under ONNX Runtime."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from glimp_common.errors import BadInputError, ModelContractError, ProviderError
from onnx_lm import (
    GREEDY,
    CausalLM,
    ChatMessage,
    LMContext,
    SamplingParams,
    SessionConfig,
    StopCriteria,
    StopReason,
    decode_until,
    make_rng,
)
from onnx_lm.manifest import Manifest
from onnx_lm.providers import CPU, CUDA, has_gpu_device


@pytest.fixture(scope="module")
def lm(tiny_qwen3_dir: Path) -> CausalLM:
    return CausalLM.load(tiny_qwen3_dir, SessionConfig(providers="cpu"))


def _prompt(lm: CausalLM) -> str:
    return lm.tokenizer.render_prompt([ChatMessage("user", "What is 12+30?")])


def test_cpu_provider_is_proven_and_cache_is_on_host(lm: CausalLM) -> None:
    assert lm.provider.name == "CPUExecutionProvider"
    cache = lm.new_cache()
    lm.prefill(cache, [1, 2, 3])
    assert cache.length == 3
    assert cache.keys[0].device_name().lower() == "cpu"
    assert cache.nbytes == 3 * lm.manifest.kv.bytes_per_token()


def test_incremental_decode_matches_one_full_pass(lm: CausalLM) -> None:
    ids = lm.tokenizer.encode(_prompt(lm))
    full = lm.forward(lm.new_cache(), ids)
    cache = lm.new_cache()
    lm.prefill(cache, ids[:4])
    last = [lm.decode_one(cache, token) for token in ids[4:]][-1]
    assert np.abs(full[-1] - last).max() < 1e-4


def test_truncate_then_refeed_restores_logits(lm: CausalLM) -> None:
    ids = lm.tokenizer.encode(_prompt(lm))
    cache = lm.new_cache()
    reference = lm.prefill(cache, ids)
    cache.truncate(len(ids) - 3)
    again = lm.prefill(cache, ids[-3:])
    assert np.abs(reference - again).max() < 1e-4


def test_sync_reuses_the_longest_common_prefix(lm: CausalLM) -> None:
    ctx = LMContext(lm)
    prompt = _prompt(lm)
    first = ctx.sync(prompt)
    assert first.reused_tokens == 0 and first.prefill_tokens == first.total_tokens
    grown = ctx.sync(prompt + "Add the tens.")
    assert grown.reused_tokens == first.total_tokens
    assert grown.prefill_tokens == len(lm.tokenizer.encode("Add the tens."))
    same = ctx.sync(prompt + "Add the tens.")
    assert same.prefill_tokens == 0
    edited = ctx.sync(prompt + "Add the ones.")
    assert edited.reused_tokens == first.total_tokens + len("Add the ")  # char-level tokenizer


def test_decode_until_stops_at_a_stop_string_and_keeps_the_probe(lm: CausalLM) -> None:
    ctx = LMContext(lm)
    ctx.sync(_prompt(lm))
    greedy = decode_until(ctx, GREEDY, StopCriteria(max_tokens=12), make_rng(GREEDY))
    assert greedy.stop_reason in (StopReason.MAX_TOKENS, StopReason.EOS)
    # Use a character the greedy text contains as the stop string: it must be cut there.
    stop_char = greedy.text[3] if len(greedy.text) > 3 else greedy.text[-1]
    ctx.sync(_prompt(lm))
    cut = decode_until(ctx, GREEDY, StopCriteria((stop_char,), 12), make_rng(GREEDY))
    assert cut.stop_reason == StopReason.STOP_STRING
    assert cut.text == greedy.text[: greedy.text.index(stop_char)]
    # A probe token given as first_token is the first token of the span, not sampled again.
    ctx.sync(_prompt(lm))
    probe = lm.tokenizer.encode("Z")[0]
    kept = decode_until(ctx, GREEDY, StopCriteria(max_tokens=3), make_rng(GREEDY), first_token=probe)
    assert kept.token_ids[0] == probe and kept.text.startswith("Z")


def test_seeded_sampling_is_reproducible(lm: CausalLM) -> None:
    params = SamplingParams(temperature=0.8, top_p=0.95, seed=11)
    texts = []
    for _ in range(2):
        ctx = LMContext(lm)
        ctx.sync(_prompt(lm))
        texts.append(decode_until(ctx, params, StopCriteria(max_tokens=16), make_rng(params)).text)
    assert texts[0] == texts[1]


def test_context_window_is_enforced(lm: CausalLM) -> None:
    with pytest.raises(BadInputError, match="exceed the model's context"):
        lm.prefill(lm.new_cache(), [1] * (lm.manifest.max_context_tokens + 1))


def test_missing_folder_and_manifest_are_named(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    with pytest.raises(ModelContractError, match="does not exist"):
        CausalLM.load(tmp_path / "nope")
    with pytest.raises(ModelContractError, match="manifest.json is missing"):
        CausalLM.load(tmp_path)


def test_corrupt_onnx_file_is_named(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_qwen3_dir, broken)
    (broken / "model.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelContractError, match="not a valid ONNX model"):
        CausalLM.load(broken, SessionConfig(providers="cpu"))


def test_graph_that_does_not_fit_the_manifest_is_named(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_qwen3_dir, wrong)
    data = json.loads((wrong / "manifest.json").read_text())
    data["kv"]["num_layers"] += 1  # the graph has one layer fewer than the manifest claims
    (wrong / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelContractError, match=r"lacks past_key_values\.\d+\.key"):
        CausalLM.load(wrong, SessionConfig(providers="cpu"))


def test_manifest_validation_names_the_field(tiny_qwen3_dir: Path) -> None:
    data = json.loads((tiny_qwen3_dir / "manifest.json").read_text())
    with pytest.raises(ModelContractError, match="architecture 'gpt2' is not supported"):
        Manifest.from_dict({**data, "architecture": "gpt2"})
    with pytest.raises(ModelContractError, match="missing or has unknown fields"):
        Manifest.from_dict({k: v for k, v in data.items() if k != "vocab_size"})


def test_unknown_provider_is_a_clear_error(tiny_qwen3_dir: Path) -> None:
    with pytest.raises(BadInputError, match="unknown execution provider 'rocm'"):
        CausalLM.load(tiny_qwen3_dir, SessionConfig(providers="rocm"))


@pytest.mark.skipif(CUDA not in ort.get_available_providers() or has_gpu_device(),
                    reason="needs onnxruntime-gpu listing CUDA on a machine without a GPU")
def test_a_listed_but_failing_provider_falls_back_to_cpu(
    tiny_qwen3_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # onnxruntime-gpu lists CUDA here, but it cannot run: it counts only after a real run, so the
    # load moves on to the CPU, and says why.
    with caplog.at_level(logging.WARNING, logger="onnx_lm.session"):
        lm = CausalLM.load(tiny_qwen3_dir, SessionConfig(providers=["cuda", "cpu"]))
    assert lm.provider.name == CPU and lm.session_providers[0] == CPU and lm.provider.device == "cpu"
    assert any("CUDAExecutionProvider failed" in r.getMessage() for r in caplog.records)
    assert lm.prefill(lm.new_cache(), [5, 6, 7]).shape == (lm.manifest.vocab_size,)
    with pytest.raises(ProviderError, match="no execution provider could run .*cuda: "):
        CausalLM.load(tiny_qwen3_dir, SessionConfig(providers=["cuda"]))
