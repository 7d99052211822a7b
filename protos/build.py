"""Regenerate the Python code of the contract: `python -m protos.build`.

The generated `edge_cloud_v1_pb2.py` / `.pyi` are committed (so an install needs no
grpcio-tools); a test checks they match the .proto.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO_FILES = ("edge_cloud_v1.proto",)


def generate(out_dir: Path = PROTO_DIR) -> None:
    from grpc_tools import protoc

    for name in PROTO_FILES:
        code = protoc.main(
            ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", name]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {name} (exit {code})")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_DIR)
