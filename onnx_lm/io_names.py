"""The ONNX input/output names of an exported causal LM, in one place, checked at load.

These are the names optimum's `text-generation-with-past` export gives Llama/Qwen2/Qwen3; the fast
graph (`export.fast_graph`) takes the same ones without `position_ids`: its GroupQueryAttention
derives positions from the attention mask. Which graph a folder holds is its manifest's `graph`.
"""

from __future__ import annotations

from dataclasses import dataclass

from glimp_common.errors import ModelContractError

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"


def past_key(layer: int) -> str:
    return f"past_key_values.{layer}.key"


def past_value(layer: int) -> str:
    return f"past_key_values.{layer}.value"


def present_key(layer: int) -> str:
    return f"present.{layer}.key"


def present_value(layer: int) -> str:
    return f"present.{layer}.value"


@dataclass(frozen=True)
class GraphSignature:
    """What the loaded graph takes, found by inspecting its inputs."""

    num_layers: int
    has_position_ids: bool  # Llama-family exports take explicit positions

    def past_inputs(self) -> list[tuple[str, str]]:
        return [(past_key(i), past_value(i)) for i in range(self.num_layers)]

    def present_outputs(self) -> list[tuple[str, str]]:
        return [(present_key(i), present_value(i)) for i in range(self.num_layers)]


def check_signature(
    input_names: list[str], output_names: list[str], num_layers: int, graph: str = "optimum"
) -> GraphSignature:
    """Verify the graph has every input/output the runtime drives for its kind (`graph`, the
    manifest's); name all that are missing."""
    required_inputs = [INPUT_IDS, ATTENTION_MASK]
    required_outputs = [LOGITS]
    for layer in range(num_layers):
        required_inputs += [past_key(layer), past_value(layer)]
        required_outputs += [present_key(layer), present_value(layer)]
    missing = [n for n in required_inputs if n not in input_names]
    missing += [n for n in required_outputs if n not in output_names]
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ModelContractError(
            f"the ONNX graph lacks {shown}; it must be a causal LM exported with past KV "
            "(`glimp export`, i.e. optimum task text-generation-with-past) for a manifest of "
            f"{num_layers} layers"
        )
    has_position_ids = POSITION_IDS in input_names
    if graph == "fast" and has_position_ids:
        raise ModelContractError(
            "the manifest says graph 'fast' but the ONNX graph takes position_ids, as optimum's does: "
            "the folder's manifest and model.onnx do not belong together; re-export it with `glimp export`"
        )
    return GraphSignature(num_layers=num_layers, has_position_ids=has_position_ids)
