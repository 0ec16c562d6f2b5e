"""Regenerate the Python stubs of ``risk_monitor.proto`` (needs the dev extra: grpcio-tools).

Run ``python -m risk_monitor.service.proto.generate`` after editing the proto. The stubs are
committed so the service runs without grpcio-tools; a test regenerates them into a temporary
directory and compares, so the committed files always match the proto and this script.
The proto is compiled with the source root as include path, which makes the generated imports
absolute (``from risk_monitor.service.proto import risk_monitor_pb2``).
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PROTO_DIR.parent.parent.parent
PROTO_FILES = ("risk_monitor/service/proto/risk_monitor.proto",)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generated_names() -> list[str]:
    """File names (relative to the proto folder) this script writes."""
    return [Path(p).stem + suffix for p in PROTO_FILES for suffix in GENERATED_SUFFIXES]


def generate(out_root: Path = SOURCE_ROOT) -> list[Path]:
    """Compile the protos into ``out_root`` (the package tree is recreated under it)."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{SOURCE_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *PROTO_FILES,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    target = out_root / PROTO_DIR.relative_to(SOURCE_ROOT)
    return [target / name for name in generated_names()]


def main() -> None:
    for path in generate():
        print(path)


if __name__ == "__main__":
    sys.exit(main())
