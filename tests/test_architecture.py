"""Berth's layers only point down: the import graph of its own modules, read with `ast`.

Every import counts, also one inside a function: a function-level import
hides a cycle from Python, not from this test. docs/architecture.md names the
layers; LAYERS below is that table, top to bottom.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# Top to bottom; the longest matching prefix gives a module its layer.
LAYERS = [
    ("project", ["berth"]),
    ("interfaces", ["web"]),
    ("tasks", ["engine.tasks"]),
    ("entry points", ["engine"]),
    ("locked bodies", ["engine.locked", "engine.sampler"]),
    ("alerts domain", ["alerts"]),
    ("backups domain", ["backups"]),
    ("snapshots domain", ["snapshots"]),
    ("workloads domain", ["workloads"]),
    ("library", ["lib"]),
]
PACKAGES = ["berth", "web", "engine", "alerts", "backups", "snapshots", "workloads", "lib"]

# The old task paths, kept for one release for tasks already queued in a broker
# (workloads/tasks.py and snapshots/tasks.py say so): the only imports that point up.
ALLOWED_UPWARD = {
    ("workloads.tasks", "engine.tasks"),
    ("snapshots.tasks", "engine.tasks"),
}
# Docker is spoken to in one place only.
DOCKER_MODULE = "lib.runtime"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imported(path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(module, line) of every import of a project module or of `docker`, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                pytest.fail(f"{path}:{node.lineno}: relative import; Berth imports absolutely")
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                # `from pkg import module` names the module; `from module import name` the module.
                yield (full if full in modules else node.module), node.lineno


def layer_of(module: str) -> int:
    best, rank = -1, None
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank is not None, f"{module} is in no layer; add it to LAYERS"
    return rank


def graph() -> dict[str, set[tuple[str, int]]]:
    modules = project_modules()
    edges: dict[str, set[tuple[str, int]]] = {}
    for module, path in modules.items():
        edges[module] = {(target, line) for target, line in imported(path, modules)
                         if target in modules or target.split(".")[0] == "docker"}
    return edges


def test_it_finds_the_project_modules():
    modules = project_modules()
    # A guard against a test that walks nothing and so cannot fail.
    for expected in ("engine.locked.deploy", "web.api.workloads", "workloads.models.deploys",
                     "lib.locks", "snapshots.journal", "engine.tasks"):
        assert expected in modules
    assert ("engine.locked.capture", 1) in {(t, 1) for t, _ in graph()["engine.locked.deploy"]}


def test_no_import_points_up_a_layer():
    wrong = []
    for module, targets in graph().items():
        for target, line in targets:
            if target.split(".")[0] == "docker" or (module, target) in ALLOWED_UPWARD:
                continue
            if layer_of(target) < layer_of(module):
                wrong.append(f"{module}:{line} imports {target} "
                             f"({LAYERS[layer_of(module)][0]} -> {LAYERS[layer_of(target)][0]})")
    assert not wrong, "imports that point up:\n" + "\n".join(sorted(wrong))


def test_there_is_no_import_cycle():
    edges = {m: {t for t, _ in ts if not t.startswith("docker")
                 and (m, t) not in ALLOWED_UPWARD} for m, ts in graph().items()}
    cycles = strongly_connected(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(sorted(c)) for c in cycles)


def test_packages_form_a_dag():
    """Between packages too (snapshots may use workloads, never the reverse)."""
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        for target, _line in targets:
            if target.startswith("docker") or (module, target) in ALLOWED_UPWARD:
                continue
            source, dest = module.split(".")[0], target.split(".")[0]
            if source != dest:
                edges.setdefault(source, set()).add(dest)
    assert not strongly_connected(edges)


def test_only_the_docker_wrapper_imports_docker():
    importers = sorted(m for m, targets in graph().items()
                       if any(t.split(".")[0] == "docker" for t, _ in targets))
    assert importers == [DOCKER_MODULE]


def test_a_model_never_takes_a_lock_nor_reaches_the_engine():
    for module, targets in graph().items():
        if module.split(".")[0] in ("workloads", "snapshots") and ".tasks" not in module:
            names = {t for t, _ in targets}
            assert "lib.locks" not in names, f"{module} takes a lock"
            assert not {t for t in names if t.split(".")[0] in ("engine", "web")}, module


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        {"a", "b", "c"}]


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Components of more than one node, or with a self-loop (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(component)
    return found
