"""ServingConfig renders config.pbtxt through text_format; one flags object renders both server lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from cloud_service.commands import production_command, production_flags
from cloud_service.engines.onnx import EngineConfig
from cloud_service.launcher import ServerConfig, TritonServer
from cloud_service.repository import TEMPLATE_DIR, RepositorySettings
from cloud_service.security import TLSFiles, new_token
from cloud_service.serving_config import ServingConfig
from glimp_common.errors import BadInputError
from protos.contract import MODEL_NAME


def test_the_rendered_pbtxt_parses_back_to_the_same_values() -> None:
    config = ServingConfig(cache_budget_bytes=12345, idle_ttl_s=7.5, providers="cpu", intra_op_threads=3)
    parsed = text_format.Parse(config.render_pbtxt(), mc.ModelConfig())
    assert parsed == config.model_config()
    assert parsed.name == MODEL_NAME and parsed.backend == "python" and parsed.max_batch_size == 0
    assert [g.kind for g in parsed.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    params = {key: value.string_value for key, value in parsed.parameters.items()}
    assert params == config.parameters()
    assert ServingConfig.from_parameters(params) == config


def test_the_checked_in_template_is_the_default_rendering() -> None:
    rendered = ServingConfig().render_pbtxt()
    assert (TEMPLATE_DIR / "config.pbtxt").read_text(encoding="utf-8") == rendered, (
        "regenerate it: python -c 'from cloud_service.serving_config import ServingConfig; "
        "print(ServingConfig().render_pbtxt(), end=\"\")' > cloud_service/triton_model/config.pbtxt"
    )


def test_every_default_comes_from_the_serving_config() -> None:
    defaults = ServingConfig()
    assert RepositorySettings().parameters() == defaults.parameters()
    engine = EngineConfig()
    assert engine.cache_budget_bytes == defaults.cache_budget_bytes
    assert engine.idle_ttl_s == defaults.idle_ttl_s
    assert ServingConfig.from_parameters({}) == defaults


@pytest.mark.parametrize("fields", [{"cache_budget_bytes": 0}, {"idle_ttl_s": 0}, {"intra_op_threads": -1},
                                    {"providers": "nope"}, {"grpc_port": 0}, {"metrics_port": 8001}])
def test_bad_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(BadInputError):
        ServingConfig(**fields)  # type: ignore[arg-type]


def test_a_non_numeric_parameter_is_refused() -> None:
    with pytest.raises(BadInputError, match="not a number"):
        ServingConfig.from_parameters({"CACHE_BUDGET_BYTES": "lots"})


def _flags(args: list[str]) -> dict[str, str]:
    """flag name -> value (the value with secrets and paths left as given)."""
    return dict(arg.partition("=")[::2] for arg in args)


def test_both_command_lines_carry_the_same_server_flags(tmp_path: Path) -> None:
    (tmp_path / MODEL_NAME).mkdir()
    (tmp_path / MODEL_NAME / "config.pbtxt").write_text(ServingConfig().render_pbtxt())
    token = new_token()
    for name in ("c", "k"):
        (tmp_path / name).write_text("PEM")
    server = TritonServer(ServerConfig(tmp_path, token=token, tls=TLSFiles(tmp_path / "c", tmp_path / "k")))
    launcher = server._command(tmp_path / "backends")[1:]
    production = production_flags().args()
    printed = production_command(tmp_path)
    for arg in production:
        assert arg in printed
    secret_or_path = ("--model-repository", "--grpc-server-cert", "--grpc-server-key")
    local, container = _flags(launcher), _flags(production)
    assert set(container) - {"--grpc-restricted-protocol", *secret_or_path, "--grpc-use-ssl"} <= set(local)
    for name, value in container.items():
        if name not in (*secret_or_path, "--grpc-restricted-protocol", "--grpc-use-ssl"):
            assert local[name] == value, name
    # The container checks both tokens itself (shell expressions on its line); the local server sits
    # on a private socket behind the gateway, so no secret and no TLS key is on its argv.
    groups = [a for a in production if a.startswith("--grpc-restricted-protocol=")]
    assert len(groups) == 2 and "$GLIMP_EDGE_TOKEN" in " ".join(groups)
    assert not [a for a in launcher if a.startswith(("--grpc-restricted-protocol", "--grpc-use-ssl"))]
    assert token not in " ".join(launcher)
    assert _flags(launcher)["--grpc-address"].startswith("unix:")
