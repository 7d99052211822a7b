"""Commit only on success, on a real tritonserver: a write cut by the client's deadline mid-decode.

The model is the tiny Qwen3 forced to write "a" forever (tests/model_edits.py), so a write runs
to its max_tokens and takes long enough for a short deadline to cut it: Triton cancels the
request, the engine notices at its next poll, and nothing the call brought is committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_helpers import MESSAGES, metric, new_ids, start_server, step_request
from model_edits import force_token

from cloud_service.launcher import TritonServer
from cloud_service.security import new_token
from edge_client.errors import CloudUnavailableError
from edge_client.link import CloudLinkConfig, TritonLink
from protos import edge_cloud_v1_pb2 as pb

pytestmark = [pytest.mark.triton, pytest.mark.slow]

PB_MESSAGES = [pb.ChatMessage(role=m.role, content=m.content) for m in MESSAGES]
LONG_WRITE_TOKENS = 400


@pytest.fixture(scope="module")
def forced_server(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[TritonServer, str]]:
    folder = tmp_path_factory.mktemp("cancel")
    token = new_token()
    server = start_server(force_token(tiny_qwen3_dir, folder / "forced", "a"), folder / "repo", token,
                          intra_op_threads=1)
    try:
        yield server, token
    finally:
        server.stop()


def test_a_write_with_new_text_cancelled_mid_decode_commits_nothing(
    forced_server: tuple[TritonServer, str]
) -> None:
    server, token = forced_server
    link = TritonLink(CloudLinkConfig(server.grpc_url, token, timeout_s=60.0))
    try:
        ids = new_ids()
        created = link.exchange(step_request(*ids, create=True, messages=PB_MESSAGES, action=pb.ABSORB,
                                             new_text="Step one."))
        base = created.reply.result.state
        new_text = "\n\nStep two: add them."
        long_write = step_request(*ids, base=base, action=pb.WRITE_STEP, new_text=new_text,
                                  max_tokens=LONG_WRITE_TOKENS)
        # How long the whole write takes here (another context): the deadline is a quarter of it.
        full = link.exchange(step_request(*new_ids(), create=True, messages=PB_MESSAGES,
                                          action=pb.WRITE_STEP, new_text="Step one." + new_text,
                                          max_tokens=LONG_WRITE_TOKENS))
        assert full.reply.result.text == "a" * LONG_WRITE_TOKENS
        decoded_before = metric(server.metrics_url, "glimp_decode_tokens_total")
        with pytest.raises(CloudUnavailableError, match="DEADLINE_EXCEEDED"):
            link.exchange(long_write, timeout_s=full.round_trip_s / 4)
        again = link.exchange(long_write)  # the old base: accepted, so nothing was committed
        assert again.reply.WhichOneof("outcome") == "result", again.reply
        assert again.reply.result.text == "a" * LONG_WRITE_TOKENS
        assert again.reply.result.state.length_bytes == base.length_bytes + len(new_text) + LONG_WRITE_TOKENS
        # The cut call's decode never finished (a finished one would have committed, and counted
        # its tokens): only the retry's tokens were counted.
        decoded = metric(server.metrics_url, "glimp_decode_tokens_total") - decoded_before
        assert decoded == LONG_WRITE_TOKENS
    finally:
        link.close()
