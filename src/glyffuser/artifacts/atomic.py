"""Outputs appear whole or not at all, and glyffuser replaces only what it wrote itself.

A stage writes each output to a temporary sibling and renames it into place only when the stage
finished, so a crash or a bad input never leaves a half-written file that DVC or a later stage
would trust.

The one rule for every output path (CLI and stages alike), checked by `check_outputs` before any work
and again by `atomic_outputs` right before anything is replaced:
- a folder output may replace a folder only if that folder is empty or carries glyffuser's marker file
  (`.glyffuser-output`, written into every folder output);
- a file output may replace a file only if it is a writable file of the type glyffuser writes there (a
  PNG where a PNG goes, JSON where JSON goes, ...), never a folder;
- the place must be writable: every existing parent is a folder and a file can be created in it.
Anything else is one `GlyffuserError` line, and nothing is touched.

Interruptions never lose an output: Ctrl+C or SIGTERM during the final renames waits until they are
done (the new outputs are in place, then the signal acts), any other exception there puts the old
outputs back, and a staging folder left by a process that was killed outright (SIGKILL, power loss)
is recognised by its process id on the next run, which puts back any old output it still holds and
removes it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from glyffuser.errors import GlyffuserError

MARKER = ".glyffuser-output"
MARKER_TEXT = "Written by glyffuser, which may replace this folder when told to write here again.\n"

# What a file output of each kind starts with (or, for text kinds, how it reads), so that an existing
# file is replaced only when it is what glyffuser would have written there.
_MAGIC = {".parquet": (b"PAR1",), ".pt": (b"PK\x03\x04",), ".png": (b"\x89PNG\r\n\x1a\n",), ".gif": (b"GIF87a", b"GIF89a"),
          ".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",), ".webp": (b"RIFF",)}
_TEXT = {".json", ".csv", ".html", ".txt"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_ours_file(path: Path) -> bool:
    """An existing file is ours to replace if it is empty or of the kind glyffuser writes under its suffix."""
    if path.stat().st_size == 0:
        return True
    suffix = path.suffix.lower()
    if suffix in _MAGIC:
        try:
            with path.open("rb") as f:
                head = f.read(16)
        except OSError:
            return False
        return any(head.startswith(m) for m in _MAGIC[suffix])
    if suffix in _TEXT:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        if suffix == ".json":
            try:
                json.loads(text)
            except ValueError:
                return False
        if suffix == ".html":
            return text.lstrip().lower().startswith("<!doctype html")
        return True
    from PIL import Image  # other image formats the sample command accepts (.bmp, .tiff, ...)

    try:
        with Image.open(path):
            return True
    except (OSError, ValueError):
        return False


def check_place(path: Path) -> None:
    """Every existing parent of `path` is a folder, and a file can be created in the nearest one."""
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link
            raise GlyffuserError(f"cannot write {path}: {parent} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise GlyffuserError(f"cannot write {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".glyffuser-probe.", dir=parent)
    except OSError as err:
        why = "read-only file system" if err.errno == errno.EROFS else (err.strerror or str(err)).lower()
        raise GlyffuserError(f"cannot write {path}: {why} ({parent})") from None
    os.close(fd)
    os.unlink(probe)


def check_output(path: str | Path, folder: bool = False) -> None:
    """Refuse, in one line and before any work, an output path glyffuser may not or cannot write."""
    path = Path(path)
    if path.is_dir():
        if not folder:
            raise GlyffuserError(f"{path} is a folder; glyffuser writes a file there and never replaces a folder: "
                                 "choose another path")
        if any(path.iterdir()) and not (path / MARKER).is_file():
            raise GlyffuserError(f"{path} is a folder that glyffuser did not write (no {MARKER} in it) and is not "
                                 "empty: glyffuser will not replace it; choose another path or empty it")
    elif path.exists() or path.is_symlink():
        if folder:
            raise GlyffuserError(f"{path} is a file; glyffuser writes a folder there and never replaces other files: "
                                 "choose another path")
        if not path.exists():
            raise GlyffuserError(f"{path} is a broken symbolic link: glyffuser will not replace it")
        if not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise GlyffuserError(f"{path} is read-only: glyffuser will not replace it; make it writable "
                                 "(chmod u+w) or choose another path")
        if not _is_ours_file(path):
            kind = path.suffix.lower().lstrip(".") or "glyffuser"
            raise GlyffuserError(f"{path} exists and is not a {kind} file glyffuser wrote: it will not replace it; "
                                 "choose another path")
    check_place(path)


def check_outputs(*paths: str | Path, folders: bool = False) -> None:
    for path in paths:
        check_output(path, folders)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# The hidden staging folder of one atomic_outputs call: .<first output's name>.<pid>.<random>.tmp
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[a-z0-9_]+\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def recover_stale_staging(folder: Path) -> list[Path]:
    """Staging folders in `folder` whose process is gone: put back each old output whose place is empty
    (the process died between moving it aside and placing the new one), then remove the folder."""
    recovered = []
    if not folder.is_dir():
        return recovered
    for staging in folder.iterdir():
        m = _STAGING.match(staging.name)
        if not (m and staging.is_dir() and not staging.is_symlink()) or _alive(int(m["pid"])):
            continue
        for old in staging.glob("*.old"):
            final = folder / old.name.removesuffix(".old")
            if not (final.exists() or final.is_symlink()):
                os.replace(old, final)
                recovered.append(final)
        shutil.rmtree(staging, ignore_errors=True)
    return recovered


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl+C and SIGTERM wait until the block is done, then act as they would have (only the main thread
    runs Python signal handlers; elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


def _publishable(tmp: Path) -> None:
    """Modes as for any file the user creates (mkdtemp's folder is 0700; some writers use 0600)."""
    mask = _umask()
    paths = [tmp, *tmp.rglob("*")] if tmp.is_dir() else [tmp]
    for p in paths:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


@contextmanager
def atomic_outputs(*paths: str | Path, dirs: bool = False) -> Iterator[list[Path]]:
    """Yield temporary paths standing in for `paths`; move them into place on success, all or none.

    With `dirs=True` each temporary path is an empty directory (it receives the marker file), else a
    file path not yet created. The temporary paths sit in one hidden staging folder per destination
    folder, so that the final renames stay on one file system. Only `paths` are replaced: whatever else
    their folders hold stays. Each path is checked with `check_output` on entry and again before the
    renames. On an exception every temporary path is removed and the real outputs are left untouched;
    if a rename fails half-way, the outputs already replaced are put back.
    """
    finals = [Path(p) for p in paths]
    if len(set(finals)) != len(finals):
        raise ValueError("atomic_outputs got the same output twice")
    for folder in dict.fromkeys(final.parent for final in finals):
        recover_stale_staging(folder)
    check_outputs(*finals, folders=dirs)
    temps: list[Path] = []
    with ExitStack() as stack:
        staging: dict[Path, Path] = {}
        for final in finals:
            if final.parent not in staging:
                final.parent.mkdir(parents=True, exist_ok=True)
                staging[final.parent] = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp",
                                                              dir=final.parent))
                stack.callback(_remove, staging[final.parent])
            tmp = staging[final.parent] / final.name
            if dirs:
                tmp.mkdir()
            temps.append(tmp)
        yield temps
        for final, tmp in zip(finals, temps):
            if not tmp.exists():
                raise RuntimeError(f"stage did not write its output {final}")
            if dirs:
                (tmp / MARKER).write_text(MARKER_TEXT)
            _publishable(tmp)
        check_outputs(*finals, folders=dirs)  # nothing appeared meanwhile that is not ours
        # Old outputs go aside into the staging folder first, so that a failed rename can put them back.
        # Signals wait for the swap: afterwards the new outputs are all in place and Ctrl+C acts as usual.
        with _signals_deferred():
            _swap(finals, temps)


def _swap(finals: list[Path], temps: list[Path]) -> None:
    """Move each old output aside and its new one into place; on any exception put every old one back."""
    moved: list[tuple[Path, Path | None]] = []  # (output, where its old copy goes), recorded before each move
    try:
        for final, tmp in zip(finals, temps):
            old = tmp.with_name(f"{tmp.name}.old") if final.exists() or final.is_symlink() else None
            moved.append((final, old))
            if old is not None:
                os.replace(final, old)
            os.replace(tmp, final)
    except BaseException as err:
        for placed, old in reversed(moved):
            if old is not None and not (old.exists() or old.is_symlink()):
                continue  # never moved aside: the old output is still in place
            if placed.exists() or placed.is_symlink():
                _remove(placed)  # the new output
            if old is not None:
                os.replace(old, placed)
        if isinstance(err, OSError):
            raise GlyffuserError(f"could not put {moved[-1][0]} in place ({err.strerror or err}); the previous "
                                 "outputs are unchanged") from None
        raise
