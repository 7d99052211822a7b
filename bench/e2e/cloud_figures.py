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
from onnx_lm import GREEDY, ChatMessage, TextCodec
from onnx_lm.manifest import Manifest
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import PROTOCOL_VERSION

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
    env = os.environ.get
    parser.add_argument("--transcript-tokens", type=int, default=int(env("GLIMP_MEASURE_TOKENS", "2000")),
                        help="tokens the cloud already holds (env GLIMP_MEASURE_TOKENS)")
    parser.add_argument("--steps", type=int, default=int(env("GLIMP_MEASURE_STEPS", "5")),
                        help="steps to take the median over (env GLIMP_MEASURE_STEPS)")
    parser.add_argument("--max-tokens", type=int, default=int(env("GLIMP_MEASURE_MAX_TOKENS", "64")),
                        help="tokens a step may write (env GLIMP_MEASURE_MAX_TOKENS)")
    args = parser.parse_args(argv)
    manifest = Manifest.load(args.model_dir)
    codec = TextCodec.load(args.model_dir, manifest)
    prompt = codec.render_prompt(list(QUESTION))
    delimiter = manifest.step_delimiter
    transcript = transcript_of(codec, prompt, args.transcript_tokens, delimiter)
    token = new_token()
    with tempfile.TemporaryDirectory(prefix="glimp_measure_") as folder, \
            local_server(args.model_dir, folder, token=token) as server:
            print(f"start to ready: {server.ready_s:.2f} s")
            with TritonLLM(CloudLinkConfig(server.grpc_url, token, timeout_s=300)) as llm:
                _measure(llm, codec, prompt, transcript, delimiter, args)
    return 0


def _measure(llm: TritonLLM, codec: TextCodec, prompt: str, transcript: str, delimiter: str,
             args: argparse.Namespace) -> None:
    held_tokens = len(codec.encode(prompt + transcript)) - len(codec.encode(prompt))
    deltas, fulls, timings = [], [], []
    for k in range(args.steps):
        step_text = f"{delimiter}Step {1000 + k}: now we check the sum once more."
        conversation = llm.open(QUESTION)
        conversation.call(LLMRequest(LLMAction.ABSORB, transcript, GREEDY))  # the context the cloud holds
        view = conversation.server_view
        base = pb.TranscriptState(length_bytes=view.length_bytes, digest=view.digest)
        delta = llm.link.exchange(_step(conversation.context_id, llm.client_key, args.max_tokens,
                                        base=base, new_text=step_text))
        messages = [pb.ChatMessage(role=m.role, content=m.content) for m in QUESTION]
        full = llm.link.exchange(_step(os.urandom(16).hex(), llm.client_key, args.max_tokens, create=True,
                                       messages=messages, new_text=transcript + step_text))
        deltas.append(delta.bytes_up)
        fulls.append(full.bytes_up)
        timings.append(delta.reply.result.timings)
    print(f"transcript held by the cloud: {held_tokens} tokens, {len(transcript.encode())} bytes of text")
    print(f"uplink of one step: delta {statistics.median(deltas):.0f} B vs full resend "
          f"{statistics.median(fulls):.0f} B ({statistics.median(fulls) / statistics.median(deltas):.0f}x)")
    _print_timings(timings)


def _step(context_id: str, client_key: bytes, max_tokens: int, **fields: object) -> pb.StepRequest:
    return pb.StepRequest(protocol_version=PROTOCOL_VERSION, context_id=context_id, client_key=client_key,
                          action=pb.WRITE_STEP, max_tokens=max_tokens, **fields)  # type: ignore[arg-type]


def _print_timings(timings: list[pb.ServerTimings]) -> None:
    def median(name: str) -> float:
        return statistics.median(getattr(t, name) for t in timings)

    decode_per_token_ms = 1000 * median("decode_s") / max(1.0, median("decode_tokens"))
    print(f"cloud step, server side (median of {len(timings)}): "
          f"prefill {median('prefill_tokens'):.0f} tokens "
          f"in {1000 * median('prefill_s'):.2f} ms (reused {median('reused_tokens'):.0f}); decode "
          f"{median('decode_tokens'):.0f} tokens in {1000 * median('decode_s'):.2f} ms "
          f"({decode_per_token_ms:.2f} ms/token); compute {1000 * median('compute_s'):.2f} ms, "
          f"queue {1000 * median('queue_s'):.3f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
