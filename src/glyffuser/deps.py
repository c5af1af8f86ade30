"""Which `glyffuser` modules a pipeline stage runs: the code dependencies of its DVC stage.

Read from the source with `ast`, nothing is imported or run. A stage's entry point (stages/NAME.py)
calls `main` of its own module, `glyffuser.stages.NAME`, which parses the command line itself
(`glyffuser/command.py`); so its closure is that module and every `glyffuser` module it imports, at
any depth and from any place in a file (an import inside a function still runs when that function
does). The CLI module (`glyffuser/cli.py`) only dispatches and is in no stage's closure.

A module that fills a template (glyffuser/templates/) names it in a top-level `TEMPLATES = ("guide.html",)`;
the template files are deps of every stage whose closure holds that module.

Modules that only record a run (RECORD_ONLY: MLflow logging, model registration) are not followed:
they cannot change a file DVC tracks (tests/test_deps.py runs stages under an audit hook and fails if
one ever writes there), so editing how a metric is logged re-runs nothing. The test suite checks
dvc.yaml against these lists, and the train stage's resume fingerprint hashes the same files.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "glyffuser"
PACKAGE_DIR = Path(__file__).resolve().parent
STAGES = ("sources", "render", "embed", "train", "sample", "classifier", "second_judge", "reward_judge", "align", "upsampler", "draw", "evaluate", "umap", "figures", "guide")
RECORD_ONLY = frozenset({f"{PACKAGE}.tracking", f"{PACKAGE}.registry"})


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
    """Every glyffuser module that importing `roots` (and calling their functions) can load, record-only ones
    and what only they import left out."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in RECORD_ONLY:
            continue
        seen.add(name)
        todo.extend(_imported_modules([_tree(_module_file(name))]) - seen)
    return seen


def command_modules(stage: str) -> set[str]:
    """The glyffuser modules the DVC stage `stage` (`glyffuser <stage>`) runs."""
    if stage not in STAGES:
        raise KeyError(f"glyffuser has no stage {stage!r}")
    module = f"{PACKAGE}.stages.{stage}"
    return module_closure({module, f"{PACKAGE}.stages", PACKAGE})  # importing it runs its packages' __init__ first


def _templates(name: str) -> list[Path]:
    """The files named by a module's top-level `TEMPLATES = (...)`, in glyffuser/templates/."""
    for node in _tree(_module_file(name)).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TEMPLATES" for t in node.targets):
            return [PACKAGE_DIR / "templates" / ast.literal_eval(node.value)[i] for i in range(len(node.value.elts))]
    return []


def command_files(stage: str) -> list[Path]:
    """The source files of `command_modules(stage)` and the templates they fill, sorted."""
    modules = command_modules(stage)
    return sorted({_module_file(m) for m in modules} | {f for m in modules for f in _templates(m)})
