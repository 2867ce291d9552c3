"""Regenerate slinfer/v1/*_pb2*.py from protos/ with grpcio-tools.

Usage: python scripts/gen_protos.py [--out DIR]
The generated modules are committed; tests/test_protos_fresh.py fails when they are stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc  # imported lazily: a dev-only dependency

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return protos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT)
    ns = parser.parse_args()
    protos = generate(ns.out)
    print(f"generated {len(protos)} protos into {ns.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
