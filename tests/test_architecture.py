"""The layout ARCHITECTURE.md describes, checked: what each package may import, no import
cycle, no module past about 400 lines, a docstring on every package's __init__."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("archs", "data", "runtime", "training", "evaluation", "serving", "tracking", "release")
COMMANDS = "commands"  # pipeline/*.py and every __main__.py: parse flags, call the library

# group -> the groups it may import (ARCHITECTURE.md's table); commands may import anything
ALLOWED = {
    "preprocess": set(),
    "pipeline.archs": set(),
    "pipeline.runtime": {"pipeline.archs", "preprocess"},
    "pipeline.data": {"pipeline.runtime", "preprocess"},
    "pipeline.evaluation": {"pipeline.archs", "pipeline.data", "pipeline.runtime", "preprocess"},
    "pipeline.serving": {"pipeline.archs", "pipeline.runtime", "preprocess"},
    "pipeline.tracking": {"pipeline.runtime", "pipeline.serving", "preprocess"},
    "pipeline.training": {
        "pipeline.archs",
        "pipeline.data",
        "pipeline.evaluation",
        "pipeline.runtime",
        "pipeline.serving",
        "pipeline.tracking",
        "preprocess",
    },
    "pipeline.release": {
        "pipeline.runtime",
        "pipeline.serving",
        "pipeline.tracking",
        "pipeline.evaluation",
        "preprocess",
        COMMANDS,
    },
}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "preprocess":
        return "preprocess"
    if parts[-1] == "__main__" or len(parts) < 2 or parts[1] not in LIBRARY:
        return COMMANDS
    return f"pipeline.{parts[1]}"


def sources() -> dict[str, Path]:
    files = [*ROOT.joinpath("pipeline").rglob("*.py"), *ROOT.joinpath("preprocess").rglob("*.py")]
    return {module_name(f): f for f in sorted(files)}


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports, anywhere in the file, and the packages whose
    __init__ runs first (except its own package's, which is being imported already)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for end in range(2, len(parts) + 1):
                target = ".".join(parts[:end])
                if target in known and not module.startswith(f"{target}."):
                    found.add(target)
    found.discard(module)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = sources()
    return {m: imports(m, path, set(modules)) for m, path in modules.items()}


def test_the_walk_finds_the_imports_it_should(graph):
    # a check that could not fail would pass on an empty graph
    assert "pipeline.training.trainer" in graph["pipeline.train"]
    assert "pipeline.runtime.checkpoint" in graph["pipeline.tracking.mlflow_calls"]
    assert group("pipeline.tracking.__main__") == COMMANDS
    assert group("pipeline.serving.generators") == "pipeline.serving"


def test_each_package_imports_only_what_the_architecture_allows(graph):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if group(module) != COMMANDS
        and group(target) != group(module)
        and group(target) not in ALLOWED[group(module)]
    )
    assert wrong == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle(graph):
    assert find_cycle(graph) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_is_past_about_400_lines():
    long = {
        m: n for m, p in sources().items() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_package_says_what_it_holds():
    for path in sources().values():
        if path.name == "__init__.py":
            assert ast.get_docstring(ast.parse(path.read_text())), f"{path}: no docstring"
