"""No import cycle inside hwsim (every subpackage; issue 9, widened with the stage registry of issue 10).

The graph is read from the source (ast), so it sees the imports inside functions too: a
function-level import that closes a loop is still a cycle a reader has to untangle. Imports under
``if TYPE_CHECKING:`` are annotations only and are left out. Run this file with ``-s`` to print
the graph's cycles: ``python -m pytest -q -s tests/test_import_cycles.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = tuple(f"hwsim.{p.name}" for p in sorted((ROOT / "hwsim").iterdir())
                 if p.is_dir() and (p / "__init__.py").exists())


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg.replace(".", "/")).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules in ``known`` that module ``name`` imports (anywhere in its body)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def resolve(target: str) -> str | None:
        while target and target not in known:   # hwsim.formats.spec.E4M3 -> hwsim.formats.spec
            target = target.rsplit(".", 1)[0] if "." in target else ""
        return target or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if (m := resolve(alias.name)):
                        found.add(m)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                for alias in child.names:   # ``from . import codec`` imports the submodule
                    sub = f"{mod}.{alias.name}"
                    m = sub if sub in known else resolve(mod)
                    if m:
                        found.add(m)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle, each once, starting at its smallest module name."""
    cycles = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cycles.append(path)
                elif nxt > start and nxt not in path:
                    stack.append((nxt, path + [nxt]))
    return sorted(cycles)


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    print(f"\nimport cycles in {', '.join(PACKAGES)}: {len(cycles)}")
    for c in cycles:
        print("  " + " -> ".join(m.removeprefix("hwsim.") for m in c + c[:1]))
    assert not cycles, f"{len(cycles)} import cycle(s): " + "; ".join(" -> ".join(c + c[:1]) for c in cycles)


def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert "hwsim.formats.spec" in graph["hwsim.formats.registry"]
    assert graph["hwsim.formats.spec"] <= set(graph)
