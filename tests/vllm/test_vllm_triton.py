"""The vLLM engine inside the real tritonserver, through the contract, over the streaming RPC.

One server per session (conftest.py), the toy LLM's HF checkpoint. The last test stops that server
and checks that no process it started (stub, EngineCore, Worker) survives it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pytest

from cloud_service.vllm.server import alive, cmdline
from cloud_service.vllm.stream_client import StreamCallError, StreamClient
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import MODEL_NAME, REQUEST_TENSOR, TranscriptDigest

pytestmark = [pytest.mark.vllm, pytest.mark.triton, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROBLEMS = [json.loads(line) for line in (REPO / "models/toy-pair/data/test.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def client(vllm_server: Any) -> Any:
    with StreamClient(vllm_server.config.grpc_url, timeout_s=600) as stream:
        yield stream


class Context:
    """A client's view of one cloud context, the way the edge keeps it."""

    def __init__(self, question: str) -> None:
        self.key, self.cid = secrets.token_bytes(32), secrets.token_hex(16)
        self.question = question
        self.digest = TranscriptDigest([("user", question)])
        self.created = False

    def request(self, action: Any, new_text: str = "", **kw: Any) -> pb.StepRequest:
        if action in (pb.WRITE_STEP, pb.WRITE_ANSWER):
            kw.setdefault("max_tokens", 32)
        if not self.created:
            return pb.StepRequest(protocol_version=1, context_id=self.cid, client_key=self.key, create=True,
                                  messages=[pb.ChatMessage(role="user", content=self.question)],
                                  new_text=new_text, action=action, **kw)
        view = self.digest.view()
        return pb.StepRequest(protocol_version=1, context_id=self.cid, client_key=self.key,
                              base=pb.TranscriptState(length_bytes=view.length_bytes, digest=view.digest),
                              new_text=new_text, action=action, **kw)

    def accept(self, reply: pb.StepReply, new_text: str) -> pb.StepResult:
        assert reply.HasField("result"), reply
        self.created = True
        self.digest.extend(new_text + reply.result.text)
        view = self.digest.view()
        held = reply.result.state
        assert (held.length_bytes, held.digest) == (view.length_bytes, view.digest)
        return reply.result


def solve(client: StreamClient, problem: dict[str, Any]) -> tuple[list[str], list[pb.StepResult]]:
    ctx, steps, results = Context(problem["question"]), [], []
    new_text = ""
    for _ in range(len(problem["steps"]) + 1):
        result = ctx.accept(client.call(ctx.request(pb.WRITE_STEP, new_text)), new_text)
        steps.append(result.text)
        results.append(result)
        new_text = "\n"
        if result.text.startswith("A:"):
            break
    client.call(ctx.request(pb.CLOSE))
    return steps, results


def test_create_write_step_then_a_delta(client: StreamClient) -> None:
    problem: dict[str, Any] = {"question": "59-7*6+74", "steps": ["52=59-7", "312=52*6", "386=312+74"]}
    ctx = Context(problem["question"])
    first = ctx.accept(client.call(ctx.request(pb.WRITE_STEP)), "")
    assert (first.text, first.stop_reason, first.stop_string) == ("52=59-7", pb.STOP_STRING, "\n")
    assert first.timings.prefill_tokens + first.timings.reused_tokens == len("Q:59-7*6+74\n")
    assert first.timings.decode_tokens >= 7 and first.timings.compute_s > 0
    second = ctx.accept(client.call(ctx.request(pb.WRITE_STEP, "\n")), "\n")
    assert second.text == "312=52*6"
    absorbed = ctx.accept(client.call(ctx.request(pb.ABSORB, "\n386=312+74\n")), "\n386=312+74\n")
    assert absorbed.stop_reason == pb.ABSORBED and absorbed.text == ""
    answer = ctx.accept(client.call(ctx.request(pb.WRITE_ANSWER)), "")
    assert (answer.text, answer.stop_reason) == ("A:386", pb.EOS)


def test_a_version_2_stream_call_sends_its_text_in_pieces_before_the_reply(client: StreamClient) -> None:
    """v2 `stream`: non-final pieces as vLLM generates, adding up to the final (committed) text; the
    states travel as 16 raw digest bytes; a non-streamed v2 call gets its reply alone."""
    key, cid, question = secrets.token_bytes(32), secrets.token_hex(16), "59-7*6+74"
    pieces: list[pb.StepPiece] = []
    first = client.call(pb.StepRequest(
        protocol_version=2, context_id=cid, client_key=key, create=True, stream=True,
        messages=[pb.ChatMessage(role="user", content=question)], action=pb.WRITE_STEP, max_tokens=32),
        on_piece=pieces.append).result
    assert first.text == "52=59-7"
    assert len(pieces) >= 2 and [p.index for p in pieces] == list(range(len(pieces)))
    assert "".join(p.text for p in pieces) == first.text  # the stop string "\n" is never sent
    digest = TranscriptDigest([("user", question)])
    digest.extend(first.text)
    assert (first.state.digest, first.state.digest_raw) == ("", digest.view().raw)
    quiet: list[pb.StepPiece] = []
    second = client.call(pb.StepRequest(
        protocol_version=2, context_id=cid, client_key=key, base=first.state, new_text="\n",
        action=pb.WRITE_STEP, max_tokens=32), on_piece=quiet.append).result
    assert (second.text, quiet) == ("312=52*6", [])


def metric(server: Any, name: str, labels: str = "") -> float:
    """Sum of the `name` series whose labels contain `labels` on the server's metrics page."""
    page = urllib.request.urlopen(f"http://127.0.0.1:{server.config.metrics_port}/metrics", timeout=10)
    pattern = rf"^{name}\{{[^}}]*{labels}[^}}]*\}} (\S+)$"
    values = [float(v) for v in re.findall(pattern, page.read().decode(), flags=re.MULTILINE)]
    assert values, f"{name} {labels} is not on the metrics page"
    return sum(values)


def test_the_model_reports_vllms_prefix_cache_and_the_contexts_on_tritons_metrics_port(
        client: StreamClient, vllm_server: Any) -> None:
    names = ("reused_tokens_total", "prefill_tokens_total", "decode_tokens_total", "context_cache_hits_total")
    before = {name: metric(vllm_server, f"glimp_{name}") for name in names}
    digest = 'kind="DIGEST_MISMATCH"'
    digest_mismatches = metric(vllm_server, "glimp_context_mismatches_total", digest)
    ctx = Context("59-7*6+74")
    first = ctx.accept(client.call(ctx.request(pb.WRITE_STEP)), "")
    steps = "\n312=52*6\n386=312+74\n"  # past one 32-token block: the absorbed prompt is cached
    second = ctx.accept(client.call(ctx.request(pb.ABSORB, steps)), steps)
    third = ctx.accept(client.call(ctx.request(pb.WRITE_ANSWER)), "")
    wrong = ctx.request(pb.WRITE_STEP, "\n")
    wrong.base.digest = "0" * 64
    assert client.call(wrong).mismatch.kind == pb.ContextMismatch.DIGEST_MISMATCH
    gained = {name: metric(vllm_server, f"glimp_{name}") - value for name, value in before.items()}
    timings = [first.timings, second.timings, third.timings]
    assert gained["reused_tokens_total"] == sum(t.reused_tokens for t in timings) >= 32
    assert gained["prefill_tokens_total"] == sum(t.prefill_tokens for t in timings)
    assert gained["decode_tokens_total"] == sum(t.decode_tokens for t in timings)
    assert gained["context_cache_hits_total"] >= 1
    assert metric(vllm_server, "glimp_context_mismatches_total", digest) == digest_mismatches + 1
    assert metric(vllm_server, "glimp_requests_running") == 0


def test_the_metrics_show_vllms_kv_use_and_queue_while_calls_run(
        client: StreamClient, vllm_server: Any) -> None:
    """Read once the first of 24 concurrent writes is answered: the others still hold KV blocks."""
    contexts = [Context(p["question"]) for p in PROBLEMS[60:84]]
    futures = [client.submit(ctx.request(pb.WRITE_STEP, max_tokens=32)) for ctx in contexts]
    next(as_completed(futures, timeout=300)).result()
    usage = metric(vllm_server, "glimp_kv_cache_usage_ratio")
    waiting = metric(vllm_server, "glimp_requests_waiting")
    for future in futures:
        future.result(300)
    assert 0 < usage <= 1, usage
    assert waiting >= 0  # 24 calls fit vLLM's batch of 64: none wait, but the series is there


def test_a_stale_base_gets_a_typed_mismatch_and_changes_nothing(client: StreamClient) -> None:
    ctx = Context("90-1+87+83+8-77")
    ctx.accept(client.call(ctx.request(pb.WRITE_STEP)), "")
    wrong_length = ctx.request(pb.WRITE_STEP, "\n")
    wrong_length.base.length_bytes += 1
    reply = client.call(wrong_length)
    assert reply.mismatch.kind == pb.ContextMismatch.LENGTH_MISMATCH
    assert reply.mismatch.server_state.digest == ctx.digest.view().digest
    wrong_digest = ctx.request(pb.WRITE_STEP, "\n")
    wrong_digest.base.digest = "0" * 64
    assert client.call(wrong_digest).mismatch.kind == pb.ContextMismatch.DIGEST_MISMATCH
    other_owner = ctx.request(pb.WRITE_STEP, "\n")
    other_owner.client_key = secrets.token_bytes(32)
    assert client.call(other_owner).mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT
    # The context is untouched: the right base still continues it.
    assert ctx.accept(client.call(ctx.request(pb.WRITE_STEP, "\n")), "\n").text == "176=89+87"


def test_close_forgets_the_context(client: StreamClient) -> None:
    ctx = Context("91*9+98+74-6-30")
    ctx.accept(client.call(ctx.request(pb.WRITE_STEP)), "")
    closed = client.call(ctx.request(pb.CLOSE))
    assert closed.result.stop_reason == pb.ABSORBED
    assert client.call(ctx.request(pb.WRITE_STEP, "\n")).mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT


def test_score_reports_the_tail_logprob(client: StreamClient) -> None:
    ctx = Context("59-7*6+74")
    ctx.accept(client.call(ctx.request(pb.WRITE_STEP)), "")
    good = client.call(ctx.request(pb.SCORE, "\n312=52*6", score_bytes=8)).result
    bad = client.call(ctx.request(pb.SCORE, "\n999=52*6", score_bytes=8)).result
    assert good.scored_tokens == bad.scored_tokens == 8
    assert good.mean_logprob > -0.5 > bad.mean_logprob
    assert good.state.length_bytes == ctx.digest.view().length_bytes  # SCORE commits nothing


def test_refusals_carry_the_onnx_engines_messages(client: StreamClient) -> None:
    with pytest.raises(StreamCallError, match="protocol_version 3 is not supported"):
        client.call(pb.StepRequest(protocol_version=3))
    ctx = Context("59-7*6+74")
    with pytest.raises(StreamCallError, match="max_tokens must be in 1..8192 for a write"):
        client.call(ctx.request(pb.WRITE_STEP, max_tokens=0))
    long = ctx.request(pb.ABSORB, "1" * 200)
    with pytest.raises(StreamCallError, match="but the model's window is 128 tokens"):
        client.call(long)


def test_a_version_2_refusal_comes_in_band_with_its_status_code(client: StreamClient) -> None:
    """Over the stream an error has no status code: a v2 call gets StepReply.refused, which keeps it."""
    ctx = Context("59-7*6+74")
    request = ctx.request(pb.WRITE_STEP, max_tokens=0)
    request.protocol_version = 2
    reply = client.call(request)
    assert reply.WhichOneof("outcome") == "refused", reply
    assert reply.refused.grpc_code == 3  # INVALID_ARGUMENT, what the ONNX engine's status is
    assert "max_tokens must be in 1..8192 for a write" in reply.refused.message


def test_unary_infer_is_unimplemented_on_a_decoupled_model(vllm_server: Any) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    triton = grpcclient.InferenceServerClient(vllm_server.config.grpc_url)
    tensor = grpcclient.InferInput(REQUEST_TENSOR, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([Context("1+1").request(pb.WRITE_STEP).SerializeToString()],
                                        dtype=np.object_))
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(MODEL_NAME, [tensor], client_timeout=30)
    assert "StatusCode.UNIMPLEMENTED" in str(caught.value.status())


def test_16_concurrent_contexts_solve_their_problems(client: StreamClient) -> None:
    problems = PROBLEMS[:16]
    started = time.perf_counter()
    with ThreadPoolExecutor(len(problems)) as pool:
        solved = list(pool.map(lambda p: solve(client, p), problems))
    elapsed = time.perf_counter() - started
    right = sum(steps[-1] == f"A:{p['answer']}" for (steps, _), p in zip(solved, problems, strict=True))
    assert right >= 14, (right, [s for s, _ in solved])  # the toy LLM is right on 98 % of the test set
    reused = [r.timings.reused_tokens for _, results in solved for r in results]
    assert any(reused), "later steps of a context must hit vLLM's prefix cache"
    print(f"16 contexts, {sum(len(s) for s, _ in solved)} steps in {elapsed:.2f} s, {right}/16 right")


def test_a_cancelled_stream_commits_nothing_half_done(vllm_server: Any) -> None:
    """Calls in flight when their stream is cancelled either finished whole or changed nothing."""
    problems = PROBLEMS[40:56]
    with StreamClient(vllm_server.config.grpc_url, timeout_s=600) as setup:
        contexts = []
        for problem in problems:
            ctx = Context(problem["question"])
            ctx.accept(setup.call(ctx.request(pb.WRITE_STEP)), "")
            contexts.append(ctx)
    doomed = StreamClient(vllm_server.config.grpc_url, timeout_s=600)
    futures = [doomed.submit(ctx.request(pb.WRITE_STEP, "\n")) for ctx in contexts]
    time.sleep(0.03)  # let the calls reach the model: a cancel before that is trivially clean
    doomed.cancel()
    cancelled = sum(1 for f in futures if f.exception() is not None)
    untouched = 0
    with StreamClient(vllm_server.config.grpc_url, timeout_s=600) as check:
        for ctx in contexts:
            reply = check.call(ctx.request(pb.ABSORB, ""))
            if reply.HasField("result"):
                untouched += 1
                continue
            # Finished before the cancel reached it: the whole step is committed, nothing less.
            held, base = reply.mismatch.server_state.length_bytes, ctx.digest.view().length_bytes
            assert reply.mismatch.kind == pb.ContextMismatch.LENGTH_MISMATCH
            assert held > base + 1, (held, base)
    time.sleep(1.0)
    seen = vllm_server.log_path.read_text(errors="replace").count("was cancelled by its client")
    print(f"{cancelled} of {len(contexts)} calls cancelled on the client, {untouched} contexts untouched, "
          f"{seen} cancellations seen by the model")
    assert cancelled > 0, "the stream was cancelled before any reply could arrive"


def test_a_stop_leaves_no_engine_process(vllm_server: Any, client: StreamClient) -> None:
    """Last: stops the session's server the way `glimp serve` must, with this test's stream still open.

    SIGTERM; tritonserver 2.51 does not exit while a stream is open, so after its exit timeout it is
    SIGKILLed, alone. Nothing it started (stub, EngineCore, Worker, resource tracker) may survive.
    """
    pids = vllm_server.tree_pids()
    names = " ".join(cmdline(p) for p in pids)
    assert "VLLM::EngineCore" in names and "VLLM::Worker" in names, names
    vllm_server.stop(signal.SIGTERM, vllm_server.config.exit_timeout_s + 5)
    deadline = time.time() + 15
    while alive(pids) and time.time() < deadline:
        time.sleep(0.5)
    left = alive(pids)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived tritonserver: {[cmdline(p) for p in left]}"
