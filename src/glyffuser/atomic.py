"""Outputs appear whole or not at all.

A stage writes each output to a temporary sibling and renames it into place only when the stage
finished, so a crash or a bad input never leaves a half-written file that DVC or a later stage
would trust.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_outputs(*paths: str | Path, dirs: bool = False) -> Iterator[list[Path]]:
    """Yield temporary paths standing in for `paths`; move them into place on success.

    With `dirs=True` each temporary path is an empty directory, else a file path not yet created.
    The temporary paths sit in one hidden staging folder per destination folder, so that the final
    renames stay on one file system. Only `paths` are replaced: whatever else their folders hold stays.
    On an exception every temporary path is removed and the real outputs are left untouched.
    """
    finals = [Path(p) for p in paths]
    if len(set(finals)) != len(finals):
        raise ValueError("atomic_outputs got the same output twice")
    temps: list[Path] = []
    with ExitStack() as stack:
        staging: dict[Path, Path] = {}
        for final in finals:
            if final.parent not in staging:
                final.parent.mkdir(parents=True, exist_ok=True)
                staging[final.parent] = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
                stack.callback(_remove, staging[final.parent])
            tmp = staging[final.parent] / final.name
            if dirs:
                tmp.mkdir()
            temps.append(tmp)
        yield temps
        for final, tmp in zip(finals, temps):
            if not tmp.exists():
                raise RuntimeError(f"stage did not write its output {final}")
        for final, tmp in zip(finals, temps):
            _remove(final)
            os.replace(tmp, final)
