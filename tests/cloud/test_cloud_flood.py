"""No request can crash the server: every KServe option, flooded, beside a greedy session (issue 12).

The flood size comes from GLIMP_FLOOD_REQUESTS (default: every case of every family twice, so CI
stays cheap); the 10,000-request run is recorded in bench/results/hardening/flood_10000.json.
"""

from __future__ import annotations

import os

import pytest

from bench.hardening.flood import families, flood, valid_step
from bench.hardening.flood_run import flood_check
from cloud_service.launcher import TritonServer
from edge_client.link import build_infer_request

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def test_every_family_floods_without_a_crash_and_the_session_is_unchanged(
    own_server: tuple[TritonServer, str], record_property: pytest.RecordProperty
) -> None:
    server, token = own_server
    requests = int(os.environ.get("GLIMP_FLOOD_REQUESTS", 2 * len(families())))
    report = flood_check(server, token, requests)
    record_property("flood", {"requests": report.requests, "statuses": report.statuses})
    assert report.requests == requests
    assert report.server_crashes == 0
    assert report.session_identical
    # Classification is stopped in front of the server, unary and streaming alike.
    assert set(report.by_family["classification"]) == {"INVALID_ARGUMENT"}
    assert set(report.by_family["stream:classification"]) == {"INVALID_ARGUMENT"}


@pytest.mark.parametrize("class_count", [1, 3])
def test_the_classification_request_that_killed_the_server_is_refused(
    own_server: tuple[TritonServer, str], class_count: int
) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    server, token = own_server
    request = grpcclient.InferInput("REQUEST", [1], "BYTES")
    request.set_data_from_numpy(np.array([valid_step().SerializeToString()], dtype=np.object_))
    client = grpcclient.InferenceServerClient(server.grpc_url)
    output = grpcclient.InferRequestedOutput("REPLY", class_count=class_count)
    with pytest.raises(InferenceServerException, match="classification"):
        client.infer("glimp_llm", [request], outputs=[output],
                     headers={"triton-grpc-protocol-x-edge-token": token}, client_timeout=30)
    server.check_ready()
    assert server.is_running()


def test_a_wrong_token_floods_nothing_through(own_server: tuple[TritonServer, str]) -> None:
    server, _ = own_server
    result = flood(server.grpc_url, "a-wrong-token-of-some-length", 50)
    assert result.statuses == {"UNAVAILABLE": 50}  # Triton's restricted-protocol answer, from the gateway
    assert build_infer_request(valid_step()).model_name == "glimp_llm"
