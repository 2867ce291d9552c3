"""Check the package graph: imports between packages point one way, the SDK stays light.

    python -m scripts.check_imports            # exit 1 and say where, on any violation
    python -m scripts.check_imports --graph    # print the package graph (docs/ARCHITECTURE.md)

What is checked (issue 13; docs/ARCHITECTURE.md):
1. No cycle between packages. A package is a folder with `__init__.py`; every import counts,
   including lazy ones inside functions and those under `TYPE_CHECKING`, because each is a
   dependency a reader must follow. The implicit import of a parent package's `__init__` is
   not an edge.
2. The policy core (`slinfer.policy`) imports nothing else of the project.
3. The SDK and the CLI import no server code when loaded: `import slinfer, slinfer.cli` in a
   fresh interpreter loads no `slinfer.services`, `slinfer.sim`, `slinfer.policy` or torch.
4. No Python file over 400 lines outside generated code (STYLE.md: one concept per file).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Folders mapped under the import root (setup.py's package_dir).
SOURCES = {
    "slinfer": ROOT / "slinfer",
    "slinfer.services": ROOT / "services",
    "slinfer.sim": ROOT / "sim",
}
PROJECT = "slinfer"
POLICY = "slinfer.policy"
MAX_LINES = 400
SERVER_PREFIXES = ("slinfer.services", "slinfer.sim", "slinfer.policy", "torch", "transformers")


@dataclass(frozen=True, slots=True)
class Edge:
    source: str  # package
    target: str  # package
    where: str  # file:line of one import that makes the edge


def _is_generated(path: Path) -> bool:
    return path.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"))


def modules() -> dict[str, Path]:
    """Every project module's dotted name -> file."""
    found: dict[str, Path] = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if path.name == "__init__.py" or not _is_generated(path):
                found[name] = path
    return found


def package_of(module: str, mods: dict[str, Path]) -> str:
    path = mods[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The longest project module that `name` (a dotted import target) names."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            for alias in node.names:
                yield f"{stem}.{alias.name}", node.lineno


def edges() -> list[Edge]:
    mods = modules()
    found: dict[tuple[str, str], Edge] = {}
    for module, path in sorted(mods.items()):
        source = package_of(module, mods)
        for name, line in imports_of(module, path):
            if not name.startswith(PROJECT + ".") and name != PROJECT:
                continue
            target_module = _resolve(name, mods)
            if target_module is None:
                continue
            target = package_of(target_module, mods)
            if target == source:
                continue
            key = (source, target)
            if key not in found:
                found[key] = Edge(source, target, f"{path.relative_to(ROOT)}:{line}")
    return sorted(found.values(), key=lambda e: (e.source, e.target))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def sdk_loads_server_code() -> list[str]:
    code = (
        "import sys, slinfer, slinfer.cli, slinfer.client\n"
        f"print('\\n'.join(m for m in sys.modules if m.startswith({SERVER_PREFIXES!r})))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    return [line for line in res.stdout.splitlines() if line]


def long_files() -> list[str]:
    out = []
    for path in (
        sorted(modules().values())
        + sorted((ROOT / "bench").rglob("*.py"))
        + sorted((ROOT / "tests").rglob("*.py"))
        + sorted((ROOT / "scripts").rglob("*.py"))
    ):
        if _is_generated(path):
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            out.append(f"{path.relative_to(ROOT)}: {n} lines (> {MAX_LINES})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.check_imports", description=__doc__)
    parser.add_argument("--graph", action="store_true", help="print the package graph")
    args = parser.parse_args(argv)
    found = edges()
    graph: dict[str, set[str]] = defaultdict(set)
    for e in found:
        graph[e.source].add(e.target)
    if args.graph:
        for source in sorted(graph):
            print(f"{source} -> {', '.join(sorted(graph[source]))}")
        return 0
    problems: list[str] = []
    where = {(e.source, e.target): e.where for e in found}
    for comp in cycles(graph):
        inner = [f"{a} -> {b} ({where[a, b]})" for a in comp for b in comp if (a, b) in where]
        problems.append("import cycle between packages: " + "; ".join(inner))
    for e in found:
        if e.source == POLICY or e.source.startswith(POLICY + "."):
            if not e.target.startswith(POLICY):
                problems.append(f"the policy core imports {e.target} ({e.where})")
    problems += [
        f"`import slinfer, slinfer.cli` loads server code: {m}" for m in sdk_loads_server_code()
    ]
    problems += long_files()
    for p in problems:
        print(p)
    if not problems:
        print(
            f"ok: {len(graph)} packages, {len(found)} package edges, no cycle; "
            f"SDK and CLI load no server code; no file over {MAX_LINES} lines"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
