"""The shape of the hubindex package: modules import downwards only, and none grows past a reading size."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hubindex"
# A module longer than this is doing several things; split it by concern.
MAX_MODULE_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, known: set[str], own: str | None = None) -> set[str]:
    """The hubindex modules `path` imports anywhere: top level, inside functions and under TYPE_CHECKING.

    Imports inside functions and typing-only imports do not fail at run time, but they are the
    same dependency: counting them keeps a cycle from hiding behind a deferred import.
    """
    own = own or module_name(path)
    package = own.split(".") if path.name == "__init__.py" else own.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != own:
                found.add(name)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_relative_deferred_and_typing_imports_are_edges(tmp_path: Path) -> None:
    module = tmp_path / "types.py"
    module.write_text("from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from hubindex.pipeline import CrawlContext\n"
                      "def f():\n    from hubindex.catalog import Catalog\n    from . import errors\n")
    known = {"hubindex", "hubindex.pipeline", "hubindex.catalog", "hubindex.errors", "hubindex.types"}
    assert imported_modules(module, known, own="hubindex.types") == {
        "hubindex", "hubindex.pipeline", "hubindex.catalog", "hubindex.errors"}


def test_hubindex_has_no_import_cycles() -> None:
    modules = package_modules()
    graph = {name: imported_modules(path, set(modules)) for name, path in modules.items()}
    assert len(graph) > 20 and sum(map(len, graph.values())) > 50  # the walk saw the package
    assert import_cycles(graph) == []


def test_no_module_is_over_the_reading_size() -> None:
    long = {name: n for name, path in package_modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these by concern: {long}"


def test_every_package_and_its_data_ship_in_the_wheel() -> None:
    """pyproject lists every hubindex package (setuptools installs only those) and the web assets."""
    import tomllib

    repo = Path(__file__).resolve().parent.parent
    setup = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {".".join(p.relative_to(repo).parent.parts) for p in (repo / "hubindex").rglob("__init__.py")}
    assert {"hubindex", "hubindex.cli", "hubindex.web"} <= packages
    assert packages | {"hubindex_plugins"} == set(setup["packages"])
    shipped = setup["package-data"]["hubindex.web"]
    assets = [p.relative_to(repo / "hubindex" / "web") for p in (repo / "hubindex" / "web").rglob("*")
              if p.is_file() and p.parent.name in ("templates", "static")]
    assert assets and all(any(a.match(pattern) for pattern in shipped) for a in assets)
