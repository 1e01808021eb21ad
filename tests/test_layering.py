"""The library's layering reads top-down: lower layers never import the training loop or the CLI,
and no two modules import each other (directly or through others), function-local imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gadms_cli"
LOWER_LAYERS = ("data", "model", "gadms")


def _module_name(path: Path, package_dir: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str], package_dir: Path = PACKAGE) -> set[str]:
    """The gadms_cli modules ``path`` imports anywhere in its body (a name imported from a package
    that is a module counts as that module)."""
    name = _module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            candidates = [source] + [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def test_lower_layers_import_neither_the_training_loop_nor_the_cli():
    upward = [
        (module, dependency)
        for module, dependencies in _graph().items()
        if module.split(".")[1:2] and module.split(".")[1] in LOWER_LAYERS
        for dependency in dependencies
        if dependency == "gadms_cli.train" or dependency.startswith("gadms_cli.commands")
    ]
    assert upward == []


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for dependency in sorted(graph[module]):
            if dependency == "gadms_cli":
                continue  # the front door re-exports everything; importing it is importing the leaves
            if state.get(dependency) == 1:
                circles.append(path[path.index(dependency) :] + [dependency])
            elif dependency not in state:
                visit(dependency, path)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert circles == []


def test_the_checker_sees_a_circle(tmp_path):
    """The import resolution finds relative, absolute and function-local imports."""
    package = tmp_path / "gadms_cli"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from .b import thing\n")
    (package / "sub" / "b.py").write_text("def f():\n    from gadms_cli.sub.a import other\n")
    modules = {"gadms_cli", "gadms_cli.sub", "gadms_cli.sub.a", "gadms_cli.sub.b"}
    assert _imports(package / "sub" / "a.py", modules, package) == {"gadms_cli.sub.b"}
    assert _imports(package / "sub" / "b.py", modules, package) == {"gadms_cli.sub.a"}
