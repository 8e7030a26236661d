"""The layout holds: no import cycles, a leaf package for pure mail code, no I/O in
the decisions (workflow/, handlers/), and tests/ and bench/ sharing their helpers
through support/ instead of importing each other.  Read from the source with
``ast``: every import counts, also one made inside a function to save start-up time."""

from __future__ import annotations

import ast
import fnmatch
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mailgate", "handlers", "workflow")
#: Modules that talk to the world: the decisions must not import them.
IO_MODULES = {"socket", "requests", "sqlite3", "psycopg", "smtplib", "urllib", "http",
              "dns", "asyncio", "aiosmtpd", "subprocess", "mailgate.clients", "mailgate.store",
              "mailgate.outbound", "mailgate.intake", "mailgate.ops", "mailgate.gateway",
              "mailgate.processing", "mailgate.executor", "mailgate.facts"}
#: The trees beside the product: neither of tests/ and bench/ imports the other, and what
#: they share lives in support/, which imports neither (issue 12, point 7).
HELPERS = ("tests", "bench", "support")
#: Functions that load a module from a file's path: an import the checks here cannot see.
LOADERS = {"spec_from_file_location", "SourceFileLoader", "run_path", "load_source"}


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


def test_the_schema_imports_nothing_above_it():
    # Every loader imports mailgate.settings, including the light ones on the pipe's
    # path: it must not bring anything of mailgate with it (nor a cycle).
    for name, path in modules().items():
        if name.startswith("mailgate.settings"):
            for imported in imports_of(name, path):
                top = imported.split(".")[0]
                assert top in sys.stdlib_module_names or top in ("msgspec", "yaml") or \
                    imported.startswith(("mailgate.settings", "mailgate.errors")) or \
                    imported == "mailgate", f"{name} imports {imported}"


def test_the_decisions_do_no_io():
    for name, path in modules().items():
        if not name.startswith(("workflow", "handlers")):
            continue
        for imported in imports_of(name, path):
            assert not any(imported == io or imported.startswith(io + ".")
                           for io in IO_MODULES), f"{name} imports {imported}"


def helpers_reached(path: Path) -> set[str]:
    """Which of tests, bench and support the file imports, and "a path" if it loads a
    module from a file.  A bench script imports its neighbours by their bare names
    (bench/ is on its sys.path): those count as bench."""
    bench = {p.stem for p in (ROOT / "bench").glob("*.py")} | {"bench"}
    found = set()
    name = module_name(path) if path.is_relative_to(ROOT) else path.stem
    for imported in imports_of(name, path):
        top = imported.split(".")[0]
        found.update({top} & {"tests", "support"} | ({"bench"} if top in bench else set()))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            called = getattr(node.func, "attr", getattr(node.func, "id", ""))
            found.update({"a path"} if called in LOADERS else set())
    return found


def helper_files(tree: str) -> list[Path]:
    return sorted((ROOT / tree).rglob("*.py"))


def test_tests_and_bench_share_helpers_only_through_support():
    allowed = {"tests": {"tests", "support"}, "bench": {"bench", "support"},
               "support": {"support"}}
    wrong = [f"{path.relative_to(ROOT)} imports {sorted(reached - allowed[tree])}"
             for tree in HELPERS for path in helper_files(tree)
             if (reached := helpers_reached(path)) - allowed[tree]]
    assert wrong == []


def test_support_drives_mailgate_without_importing_it():
    # bench runs other refs' code from exported trees: a helper importing mailgate
    # would bring this tree's into their processes.
    wrong = [f"{path.relative_to(ROOT)} imports {imported}"
             for path in helper_files("support") for imported in imports_of("support", path)
             if imported.split(".")[0] in PACKAGES]
    assert wrong == []


def test_the_product_imports_none_of_the_helpers():
    wrong = [f"{name} imports {sorted(reached)}" for name, path in modules().items()
             if (reached := helpers_reached(path))]
    assert wrong == []


def test_the_helpers_are_not_shipped():
    # support/ holds test and bench code only: the wheel takes mailgate, workflow, handlers.
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = found["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = [tree for tree in HELPERS if any(fnmatch.fnmatch(tree, p) for p in include)]
    assert shipped == []


def test_the_checks_can_fail(tmp_path):
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    probe = tmp_path / "probe.py"
    probe.write_text("import tests.helpers\nfrom _common import ROOT\n"
                     "def f():\n    from support import configs\n"
                     "    importlib.util.spec_from_file_location('x', 'bench/x.py')\n")
    assert helpers_reached(probe) == {"tests", "bench", "support", "a path"}
