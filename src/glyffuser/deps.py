"""Which `glyffuser` modules a pipeline command runs: the code dependencies of its DVC stage.

Read from the source with `ast`, nothing is imported or run. A command's closure is the CLI module's
top-level imports, the imports inside its `_cmd_<name>` function (and the CLI helpers it calls), and
then every `glyffuser` module those import, at any depth and from any place in the file (an import
inside a function still runs when that function does). The test suite checks dvc.yaml against these
lists, and the train stage's resume fingerprint hashes the same files, so neither can drift.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "glyffuser"
PACKAGE_DIR = Path(__file__).resolve().parent


def _module_file(name: str) -> Path:
    """'glyffuser.stages.train' -> .../glyffuser/train.py; 'glyffuser' -> .../glyffuser/__init__.py."""
    parts = name.split(".")[1:]
    path = PACKAGE_DIR.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imported_modules(nodes: list[ast.AST]) -> set[str]:
    """Fully qualified glyffuser modules named by the import statements anywhere under `nodes`."""
    found: set[str] = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == PACKAGE:
            found.add(node.module)
            # `from glyffuser import atomic` names a module, `from glyffuser.x import f` a name in one
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if _module_file(f"{node.module}.{a.name}").is_file())
    # importing glyffuser.a.b runs glyffuser/__init__.py and glyffuser/a/__init__.py first
    return {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_closure(roots: set[str]) -> set[str]:
    """Every glyffuser module that importing `roots` (and calling their functions) can load."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imported_modules([_tree(_module_file(name))]) - seen)
    return seen


def command_modules(command: str) -> set[str]:
    """The glyffuser modules `glyffuser <command>` runs."""
    cli = _tree(_module_file(f"{PACKAGE}.cli"))
    functions = {n.name: n for n in cli.body if isinstance(n, ast.FunctionDef)}
    entry = f"_cmd_{command}"
    if entry not in functions:
        raise KeyError(f"glyffuser has no command {command!r}")
    # The entry function and the CLI helpers it calls (e.g. _train_paths), not the other commands.
    reached, todo = set(), [entry]
    while todo:
        name = todo.pop()
        reached.add(name)
        calls = {c.func.id for c in ast.walk(functions[name]) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
        todo.extend(c for c in calls if c in functions and c not in reached and not c.startswith("_cmd_"))
    top = [n for n in cli.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    # cli.py itself is in every closure, but only the part above is followed: not every command's imports.
    return module_closure(_imported_modules(top + [functions[n] for n in reached])) | {f"{PACKAGE}.cli"}


def command_files(command: str) -> list[Path]:
    """The source files of `command_modules(command)`, sorted."""
    return sorted(_module_file(m) for m in command_modules(command))
