"""The import graph runs one way, downward, and has no cycle (DESIGN.md, "Layout").

Read from the sources with `ast` (nothing is imported), so the test also covers modules whose
third-party dependencies are not installed, and the lazy imports inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package -> the project packages it may import. Bottom first; a package never imports sideways.
ALLOWED: dict[str, set[str]] = {
    "glimp_common": set(),
    "protos": {"glimp_common"},
    "netem": {"glimp_common"},
    "onnx_lm": {"glimp_common"},
    "export": {"glimp_common", "onnx_lm"},
    "toy": {"glimp_common", "onnx_lm", "export"},
    "cloud_service": {"glimp_common", "onnx_lm", "protos"},
    "edge_client": {"glimp_common", "onnx_lm", "protos"},
    "bench": {"glimp_common", "onnx_lm", "protos", "netem", "export", "toy", "cloud_service", "edge_client"},
    "glimprouter": {"glimp_common", "onnx_lm", "protos", "netem", "export", "toy", "cloud_service",
                    "edge_client", "bench"},
}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "_pb2" in path.name:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _imports(path: Path, module: str) -> Iterator[str]:
    """Project modules named by every import statement in `path` (absolute names)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}"  # a submodule or a name in `base`: resolved below


def _graph() -> dict[str, set[str]]:
    modules = dict(_modules())
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for name in _imports(path, module):
            # The longest prefix that is a project module (`from a.b import c`: a.b.c or a.b).
            parts = name.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in modules:
                    if candidate != module:
                        edges.add(candidate)
                    break
        graph[module] = edges
    return graph


def test_no_upward_or_sideways_import() -> None:
    wrong = []
    for module, edges in _graph().items():
        package = module.split(".")[0]
        for target in edges:
            other = target.split(".")[0]
            if other != package and other not in ALLOWED[package]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle() -> None:
    graph = _graph()
    # A package's __init__ re-exports its children; an edge into a parent package from its own
    # child (`from edge_client import x` inside edge_client.y) is what would close a cycle.
    seen: dict[str, int] = {}  # 1: on the stack, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target.startswith(node + "."):
                continue  # a package importing its own submodule is the usual re-export
            if seen.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in seen:
                visit(target, stack)
        stack.pop()
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_is_read() -> None:
    # Guard against a walker that silently finds nothing (then the two tests above pass vacuously).
    graph = _graph()
    assert "edge_client.loop" in graph and "onnx_lm" in {t.split(".")[0] for t in graph["edge_client.loop"]}
