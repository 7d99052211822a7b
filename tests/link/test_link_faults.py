"""Cloud faults during a question, on real tritonservers: kill, restart, eviction, wrong token."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from link_helpers import (
    BREAKER_S,
    Recording,
    StepHook,
    answer,
    check_steps_whole,
    connect,
    in_background,
    server_config,
    sigkill,
)

from cloud_service.launcher import TritonServer
from edge_client.cloud_link import TritonLink
from edge_client.errors import NotAuthorizedError
from edge_client.resilience import BreakerState
from onnx_lm import CausalLM
from protos import edge_cloud_v1_pb2 as pb

pytestmark = [pytest.mark.triton, pytest.mark.slow]

DELIMITER = "\n\n"


def test_sigkill_mid_question_degrades_every_later_step_and_loses_none(
    own_server: TritonServer, link_token: str, slm: CausalLM
) -> None:
    fault_after = 2
    hook = StepHook({fault_after: lambda: sigkill(own_server)})
    with connect(own_server.grpc_url, link_token) as llm:
        result = answer(slm, llm, hook=hook)
    writers = [s.writer for s in result.steps]
    assert len(writers) > fault_after + 2, writers
    assert writers[: fault_after + 1] == ["cloud"] * (fault_after + 1)
    assert writers[fault_after + 1:] == ["degraded"] * (len(writers) - fault_after - 1)
    assert all(s.error for s in result.steps[fault_after + 1:])
    assert result.answer_writer == "degraded" and result.answer_record.error
    check_steps_whole(result, DELIMITER)


def test_restart_resumes_cloud_steps_with_one_full_resend(
    link_repository: Path, link_token: str, slm: CausalLM, record_property: pytest.RecordProperty
) -> None:
    config = server_config(link_repository, link_token)
    servers = [TritonServer(config)]
    ready_at: list[float] = []

    def restart() -> None:
        servers.append(TritonServer(config))  # same ports: the edge dials the same address
        servers[-1].start()
        ready_at.append(time.monotonic())

    restarting = []
    hook = StepHook(pause_s=0.05)
    hook.actions[1] = lambda: (sigkill(servers[0]), restarting.append(in_background(restart)))
    hook.actions[2] = lambda: restarting[0].join(120)  # step 2 ran degraded; now wait for the server
    try:
        servers[0].start()
        with connect(config.grpc_url, link_token) as llm:
            probes_at_ready: list[int] = []
            hook.actions[3] = lambda: probes_at_ready.append(llm.probe.probes)
            result = answer(slm, llm, hook=hook, budget_tokens=240)
            breaker = llm.breaker_state()
            probes_after = llm.probe.probes
    finally:
        for server in servers:
            server.stop()
    writers = [s.writer for s in result.steps]
    assert writers[:2] == ["cloud", "cloud"] and writers[2] == "degraded", writers
    back = next(i for i, w in enumerate(writers) if i > 2 and w == "cloud")
    assert set(writers[back:]) == {"cloud"}, writers
    resent = [s.index for s in result.steps if s.traffic.resync_bytes_up > 0]
    assert resent == [back], (resent, writers)
    assert breaker.opens == 1 and breaker.closes == 1 and breaker.state == BreakerState.CLOSED
    check_steps_whole(result, DELIMITER)
    record_property("ready_to_first_cloud_step_s", hook.finished_at[back] - ready_at[0])
    record_property("probes_after_ready", probes_after - probes_at_ready[0])
    print(f"server ready -> first cloud step {hook.finished_at[back] - ready_at[0]:.3f} s, "
          f"{probes_after - probes_at_ready[0]} probes, steps {writers}")
