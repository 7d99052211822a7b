"""`python -m bench.e2e.cloud_figures MODEL_DIR`: the cloud figures of the closing note, measured for real.

A benchmark, not part of the cloud service: it drives the server through the edge's link, so it
lives here, above both roles. Starts the model on a real tritonserver (the launcher `glimp serve`
uses) and reports:
  - start to ready (launch until a real tiny inference succeeds);
  - uplink bytes (serialized gRPC ModelInferRequest) of one reasoning step after a transcript of
    `--transcript-tokens` tokens: the delta this project sends vs. resending everything;
  - a cloud step's server-side prefill and decode times (median over `--steps` steps).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from cloud_service.launcher import local_server
from cloud_service.security import new_token
from edge_client.link import CloudLinkConfig, TritonLLM
from edge_client.llm_backend import LLMAction, LLMRequest
from glimp_common.env import env_int
from onnx_lm import GREEDY, ChatMessage, TextCodec
from onnx_lm.manifest import Manifest
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import PROTOCOL_VERSION, transcript_state

QUESTION = (ChatMessage("user", "Add the numbers 12, 7, 30 and 51, one step at a time."),)


def transcript_of(codec: TextCodec, prompt: str, tokens: int, delimiter: str) -> str:
    """Reasoning-like text of at least `tokens` tokens after `prompt`."""
    steps: list[str] = []
    k = 0
    while len(codec.encode(prompt + delimiter.join(steps))) - len(codec.encode(prompt)) < tokens:
        k += 1
        steps.append(f"Step {k}: we add {k * 7} and {k * 3} to get {k * 10}.")
    return delimiter.join(steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--transcript-tokens", type=int, default=env_int("GLIMP_MEASURE_TOKENS", 2000),
                        help="tokens the cloud already holds (env GLIMP_MEASURE_TOKENS)")
    parser.add_argument("--steps", type=int, default=env_int("GLIMP_MEASURE_STEPS", 5),
                        help="steps to take the median over (env GLIMP_MEASURE_STEPS)")
    parser.add_argument("--max-tokens", type=int, default=env_int("GLIMP_MEASURE_MAX_TOKENS", 64),
                        help="tokens a step may write (env GLIMP_MEASURE_MAX_TOKENS)")
    args = parser.parse_args(argv)
    measure(args.model_dir, transcript_tokens=args.transcript_tokens, steps=args.steps,
            max_tokens=args.max_tokens)
    return 0


def measure(model_dir: Path, *, transcript_tokens: int, steps: int, max_tokens: int) -> dict[str, float]:
    """Start the model on a real local tritonserver, measure, print and return the figures."""
    manifest = Manifest.load(model_dir)
    codec = TextCodec.load(model_dir, manifest)
    prompt = codec.render_prompt(list(QUESTION))
    delimiter = manifest.step_delimiter
    transcript = transcript_of(codec, prompt, transcript_tokens, delimiter)
    token = new_token()
    with tempfile.TemporaryDirectory(prefix="glimp_measure_") as folder, \
            local_server(model_dir, folder, token=token) as server:
        print(f"start to ready: {server.ready_s:.2f} s")
        with TritonLLM(CloudLinkConfig(server.grpc_url, token, timeout_s=300)) as llm:
            figures = _measure(llm, codec, prompt, transcript, delimiter, steps, max_tokens)
        figures["start_to_ready_s"] = server.ready_s or 0.0
    return figures


def _measure(llm: TritonLLM, codec: TextCodec, prompt: str, transcript: str, delimiter: str,
             steps: int, max_tokens: int) -> dict[str, float]:
    held_tokens = len(codec.encode(prompt + transcript)) - len(codec.encode(prompt))
    deltas, fulls, timings = [], [], []
    for k in range(steps):
        step_text = f"{delimiter}Step {1000 + k}: now we check the sum once more."
        conversation = llm.open(QUESTION)
        conversation.call(LLMRequest(LLMAction.ABSORB, transcript, GREEDY))  # the context the cloud holds
        base = transcript_state(conversation.server_view, PROTOCOL_VERSION)
        delta = llm.link.exchange(_step(conversation.context_id, llm.client_key, max_tokens,
                                        base=base, new_text=step_text))
        messages = [pb.ChatMessage(role=m.role, content=m.content) for m in QUESTION]
        full = llm.link.exchange(_step(os.urandom(16).hex(), llm.client_key, max_tokens, create=True,
                                       messages=messages, new_text=transcript + step_text))
        deltas.append(delta.bytes_up)
        fulls.append(full.bytes_up)
        timings.append(delta.reply.result.timings)
    delta_b, full_b = statistics.median(deltas), statistics.median(fulls)
    print(f"transcript held by the cloud: {held_tokens} tokens, {len(transcript.encode())} bytes of text")
    print(f"uplink of one step: delta {delta_b:.0f} B vs full resend {full_b:.0f} B "
          f"({full_b / delta_b:.0f}x)")
    figures = {"held_tokens": float(held_tokens), "delta_bytes_up": delta_b, "full_resend_bytes_up": full_b,
               "steps": float(steps)}
    figures.update(_timings(timings))
    return figures


def _step(context_id: str, client_key: bytes, max_tokens: int, **fields: object) -> pb.StepRequest:
    return pb.StepRequest(protocol_version=PROTOCOL_VERSION, context_id=context_id, client_key=client_key,
                          action=pb.WRITE_STEP, max_tokens=max_tokens, **fields)  # type: ignore[arg-type]


def _timings(timings: list[pb.ServerTimings]) -> dict[str, float]:
    def median(name: str) -> float:
        return float(statistics.median(getattr(t, name) for t in timings))

    names = ("prefill_tokens", "prefill_s", "reused_tokens", "decode_tokens", "decode_s", "compute_s",
             "queue_s")
    f = {name: median(name) for name in names}
    per_token_ms = 1000 * f["decode_s"] / max(1.0, f["decode_tokens"])
    print(f"cloud step, server side (median of {len(timings)}): "
          f"prefill {f['prefill_tokens']:.0f} tokens in {1000 * f['prefill_s']:.2f} ms "
          f"(reused {f['reused_tokens']:.0f}); decode {f['decode_tokens']:.0f} tokens "
          f"in {1000 * f['decode_s']:.2f} ms ({per_token_ms:.2f} ms/token); "
          f"compute {1000 * f['compute_s']:.2f} ms, queue {1000 * f['queue_s']:.3f} ms")
    return {f"server_{name}": value for name, value in f.items()}


if __name__ == "__main__":
    raise SystemExit(main())
