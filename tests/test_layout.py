"""The architecture as tests: api -> shared <- worker, and TensorFlow only where it belongs."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.env import REPO


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def _top(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_the_api_never_loads_worker_code() -> None:
    loaded = _top(_modules_after_import("api.main"))
    assert "worker" not in loaded
    assert "shared" in loaded
    # the API image installs only the base and [api] dependencies
    assert not loaded & {"sklearn", "matplotlib", "imagehash", "markdown_it"}


def test_the_celery_parent_process_does_not_load_tensorflow_or_the_api() -> None:
    loaded = _top(_modules_after_import("worker.tasks"))
    assert not loaded & {"tensorflow", "keras", "api"}
    assert "celery" in loaded


def _imported_packages(package: str) -> set[str]:
    found: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("shared", {"api", "worker", "fastapi"}),
    ("api", {"worker"}),
    ("worker", {"api", "fastapi"}),
])
def test_import_boundaries(package: str, forbidden: set[str]) -> None:
    assert not _imported_packages(package) & forbidden


@pytest.mark.parametrize("package", ["api", "worker", "shared"])
def test_top_level_packages_resolve_inside_the_project(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(REPO)


def test_models_folder_holds_only_its_readme_in_git() -> None:
    tracked = subprocess.run(["git", "ls-files", "models"], cwd=REPO, capture_output=True,
                             text=True).stdout.split()
    assert tracked in ([], ["models/README.md"])


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Each project module -> the project modules it imports, at the top or in a function."""
    files = [p for package in ("api", "shared", "worker", "cxr_cli")
             for p in (REPO / package).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1],
                                     *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen a level up: an import of ``a.b.x`` from ``a.c.y`` is an edge
    between the siblings ``a.c`` and ``a.b`` of their closest common package (a module
    directly in a package is a sibling of its subpackages). A cycle here is a loop between
    packages that no single pair of modules shows."""
    packages: dict[str, set[str]] = {}
    for source, targets in graph.items():
        for target in targets:
            a, b = source.split("."), target.split(".")
            common = 0
            while common < min(len(a), len(b)) - 1 and a[common] == b[common]:
                common += 1
            if common == 0 or a[:common + 1] == b[:common + 1]:
                continue  # another top-level package (the boundaries test), or one inside
            left, right = ".".join(a[:common + 1]), ".".join(b[:common + 1])
            packages.setdefault(left, set()).add(right)
            packages.setdefault(right, set())
    return packages


def test_no_import_cycle_among_the_projects_modules() -> None:
    graph = _import_graph()
    assert {"shared.registry", "shared.registry.local", "worker.runner.jobs"} <= set(graph)
    assert "shared.registry.base" in graph["shared.registry.local"]  # edges are seen
    assert _cycles(graph) == []


def test_no_import_cycle_between_packages() -> None:
    packages = _package_graph(_import_graph())
    assert "shared.ml" in packages["shared.schemas"] or "shared.schemas" in packages["shared.ml"]
    assert _cycles(packages) == []


def test_a_cycle_between_packages_is_seen_a_level_up() -> None:
    modules = {"p.a.x": {"p.b.y"}, "p.b.y": set(), "p.b.z": {"p.a.w"}, "p.a.w": set(),
               "p.c": {"p.a.x"}, "q.m": {"p.c"}}
    assert _cycles(modules) == []
    assert _cycles(_package_graph(modules)) == [["p.a", "p.b"]]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
