"""`BenchRig`: the pieces every system shares, started once per benchmark run.

A local tritonserver serving the LLM (the project's launcher, a random edge token) and the SLM
loaded once in this process. Each system dials the server through a link emulator of its own
(delay and bandwidth, counting the bytes that really cross the wire; none on loopback), so the
bytes of systems that run interleaved stay apart.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cloud_service.launcher import TritonServer, local_server
from cloud_service.repository import RepositorySettings
from cloud_service.security import new_token
from edge_client.in_process_llm import check_role
from edge_client.link import BreakerState, CloudLinkConfig, ResilienceConfig, ResilientLLM, TritonLLM
from glimp_common.errors import GlimpError
from netem import LinkEmulator, LinkProfile
from onnx_lm import CausalLM, SessionConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RigConfig:
    """What the rig runs: the two model folders, the link, and how many threads each side gets."""

    slm_dir: Path
    llm_dir: Path
    link: LinkProfile | None  # None: loopback, the edge dials the server directly
    providers: str = "auto"  # both sides' execution providers
    threads: int = 1  # intra-op threads of the SLM and of the server's LLM (0: ONNX Runtime's default)
    call_timeout_s: float = 60.0  # deadline of every cloud call
    background_sync: bool = False  # the link pushes SLM-written steps to the cloud while the SLM works


class EdgeLink:
    """One system's way to the server: an emulated link of its own, or loopback. Close it after use."""

    def __init__(self, server_url: str, server_port: int, profile: LinkProfile | None) -> None:
        self.emulator = LinkEmulator("127.0.0.1", server_port, profile).start() if profile else None
        self.url = self.emulator.address if self.emulator is not None else server_url
        self._final = (0, 0)  # the counts when the link was closed

    def wire_bytes(self) -> tuple[int, int]:
        """(up, down) bytes that crossed this link so far (or until it closed); (0, 0) on loopback."""
        return self.emulator.stats.snapshot() if self.emulator is not None else self._final

    def close(self) -> None:
        if self.emulator is not None:
            self._final = self.emulator.stats.snapshot()
            self.emulator.stop()
            self.emulator = None


class BenchRig:
    """Context manager: server up, SLM loaded; `link()` and `backend()` open a system's way to the cloud."""

    def __init__(self, config: RigConfig) -> None:
        check_role(config.slm_dir, "slm")
        check_role(config.llm_dir, "llm")
        self.config = config
        self.token = new_token()
        self.slm: CausalLM | None = None
        self.server: TritonServer | None = None
        self._repository: Path | None = None

    def __enter__(self) -> BenchRig:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def link(self) -> EdgeLink:
        """A new emulated link to the server (loopback when the rig has no link profile)."""
        assert self.server is not None, "start the rig first"
        return EdgeLink(self.server.grpc_url, self.server.config.grpc_port, self.config.link)

    def backend(self, url: str, *, resend_full: bool = False, blocking_close: bool = False) -> ResilientLLM:
        """A new client of the server, as `glimp run` uses it (retries, breaker; own channel and
        credential), already connected: the warm-up call runs before any clock does. Close it after use.
        `resend_full`: the baseline link that resends the whole transcript on every call;
        `blocking_close`: the baseline link that closes a context with a blocking round trip.

        Raises GlimpError when the server does not answer the warm-up call.
        """
        link = CloudLinkConfig(url, self.token, timeout_s=self.config.call_timeout_s)
        llm = ResilientLLM(TritonLLM(link, resend_full=resend_full, background_close=not blocking_close),
                           ResilienceConfig(background_sync=self.config.background_sync))
        llm.check()
        snapshot = llm.breaker_state()
        if snapshot.state != BreakerState.CLOSED:
            llm.close()
            raise GlimpError(f"the benchmark's own Triton server did not answer at {url}: {snapshot.reason}")
        return llm

    def server_ready_s(self) -> float | None:
        return self.server.ready_s if self.server is not None else None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._repository is not None:
            shutil.rmtree(self._repository, ignore_errors=True)
            self._repository = None

    def _start(self) -> None:
        cfg = self.config
        self._repository = Path(tempfile.mkdtemp(prefix="glimp_bench_repo_"))
        settings = RepositorySettings(link_model=True, providers=cfg.providers, intra_op_threads=cfg.threads)
        self.server = local_server(cfg.llm_dir, self._repository, token=self.token, settings=settings)
        self.server.start()
        log.info("tritonserver ready in %.1f s on %s", self.server.ready_s or 0.0, self.server.grpc_url)
        self.slm = CausalLM.load(cfg.slm_dir, SessionConfig(providers=cfg.providers,
                                                            intra_op_threads=cfg.threads))
