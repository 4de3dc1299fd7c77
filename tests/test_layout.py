"""The import graph: engine never imports the UI, and no two modules import each other (directly or not)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "asym_tui")


def imports() -> dict[str, set[str]]:
    graph = {}
    for package in PACKAGES:
        for path in (ROOT / package).glob("*.py"):
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                        [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
                found |= {name for name in names if name.split(".")[0] in PACKAGES}
            graph[f"{package}.{path.stem}"] = found
    return graph


def test_engine_never_imports_the_ui():
    upward = {module: deps for module, deps in imports().items() if module.startswith("engine.") and any(d.startswith("asym_tui") for d in deps)}
    assert not upward


def test_no_import_loops():
    graph = imports()

    def reaches(start: str, target: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            module = todo.pop()
            for dep in graph.get(module, ()):
                if dep == target:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return False

    loops = sorted((module, dep) for module, deps in graph.items() for dep in deps if reaches(dep, module))
    assert not loops


def test_rooms_that_fit():
    """No module in engine/ or asym_tui/ over 450 lines, no class over 200 (issue 22: read in small pieces)."""
    oversized = []
    for package in PACKAGES:
        for path in (ROOT / package).glob("*.py"):
            source = path.read_text()
            if source.count("\n") > 450:
                oversized.append(f"{path.name}: {source.count(chr(10))} lines")
            oversized += [f"{path.name}: class {node.name} has {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(ast.parse(source))
                          if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 200]
    assert not oversized
