"""Content hashes (sha256) of files and folders: how DVC-style identities are written into artifacts."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def update_with_file(h, path: Path) -> None:
    """Feed a file's bytes into hash object `h`, a block at a time."""
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    update_with_file(h, path)
    return h.hexdigest()


def sha256_folder(folder: Path, suffixes: tuple[str, ...]) -> str:
    """sha256 over the relative path and bytes of each file with one of `suffixes`, in sorted order."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes):
        h.update(str(f.relative_to(folder)).encode())
        update_with_file(h, f)
    return h.hexdigest()
