"""The layout holds: no import cycles, a leaf package for pure mail code, and no I/O
in the decisions (workflow/, handlers/).  Read from the source with ``ast``: every
import counts, also one made inside a function to save start-up time."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mailgate", "handlers", "workflow")
#: Modules that talk to the world: the decisions must not import them.
IO_MODULES = {"socket", "requests", "sqlite3", "psycopg", "smtplib", "urllib", "http",
              "dns", "asyncio", "aiosmtpd", "subprocess", "mailgate.clients", "mailgate.store",
              "mailgate.outbound", "mailgate.intake", "mailgate.ops", "mailgate.gateway",
              "mailgate.processing", "mailgate.executor", "mailgate.facts"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
            if p.name != "__main__.py"}


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute names), wherever in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {i for i in imports_of(name, path) if i in known and i != name}
            for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    # A package imports its own __init__ implicitly; only module-to-module edges count.
    edges = {name: {t for t in targets if not name.startswith(t + ".")}
             for name, targets in graph().items()}
    assert cycles(edges) == []


def test_the_mail_package_is_a_leaf():
    stdlib = sys.stdlib_module_names
    for name, path in modules().items():
        if not name.startswith("mailgate.mail"):
            continue
        for imported in imports_of(name, path):
            top = imported.split(".")[0]
            assert top in stdlib or top == "__future__" or imported.startswith(
                ("mailgate.mail", "mailgate.errors")) or imported == "mailgate", \
                f"{name} imports {imported}: mailgate.mail must import nothing above it"


def test_the_decisions_do_no_io():
    for name, path in modules().items():
        if not name.startswith(("workflow", "handlers")):
            continue
        for imported in imports_of(name, path):
            assert not any(imported == io or imported.startswith(io + ".")
                           for io in IO_MODULES), f"{name} imports {imported}"


def test_the_checks_can_fail():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
