"""Training checkpoints: written atomically, rotated, and only resumed by the experiment that made them.

Each checkpoint is `step-XXXXXXXX.pt` (model, EMA, optimizer and LR-scheduler state, loaded with
`torch.load(weights_only=True)`, so nothing is unpickled) plus `step-XXXXXXXX.json`, written last,
which marks it complete and records the fingerprint of the params and data that produced it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import torch

from glyffuser.errors import GlyffuserError

_MARKER = re.compile(r"^step-(\d{8})\.json$")


def _steps(folder: Path) -> list[int]:
    """Steps with a completion marker; anything else in the folder (a user's notes, a .tmp left by a
    kill) is ignored."""
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _MARKER.match(p.name)))


def pause_point(name: str) -> None:
    """With GLYFFUSER_PAUSE_AT=name the process says so on stderr and waits there, so that a test can
    SIGKILL a real training at exactly this point (mid-step, mid-checkpoint). A no-op otherwise."""
    if os.environ.get("GLYFFUSER_PAUSE_AT") == name:
        print(f"glyffuser: paused at {name}", file=sys.stderr, flush=True)
        time.sleep(3600)


def save_checkpoint(folder: Path, step: int, state: dict, fingerprint: str, keep: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    pause_point(f"checkpoint:{step}")  # the weights are in place, the marker that vouches for them is not
    marker = path.with_suffix(".json")
    marker.with_suffix(".json.tmp").write_text(json.dumps({"step": step, "fingerprint": fingerprint}))
    os.replace(marker.with_suffix(".json.tmp"), marker)
    for old in _steps(folder)[:-keep]:
        for suffix in (".json", ".pt"):  # marker first: a half-deleted checkpoint is never taken for whole
            (folder / f"step-{old:08d}{suffix}").unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: Path, fingerprint: str) -> tuple[Path | None, bool]:
    """(newest complete checkpoint made with this fingerprint or None, were others from elsewhere found)."""
    stale = False
    for step in reversed(_steps(folder)):
        marker = folder / f"step-{step:08d}.json"
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            raise GlyffuserError(f"checkpoint marker {marker} is unreadable: delete {folder} to start fresh") from None
        if info.get("fingerprint") == fingerprint:
            return marker.with_suffix(".pt"), stale
        stale = True
    return None, stale


# The files save_checkpoint writes (and the .tmp it leaves when killed): nothing else is ever removed.
_CHECKPOINT_FILE = re.compile(r"^step-\d{8}\.(pt|json)(\.tmp)?$")


def clear_checkpoints(folder: Path) -> None:
    """Remove the checkpoints and the snapshots of another experiment: only files and snapshot folders
    glyffuser wrote (a user's own files in the folder stay)."""
    import shutil

    from glyffuser.artifacts.atomic import MARKER

    for p in folder.iterdir():
        if p.is_file() and _CHECKPOINT_FILE.match(p.name):
            p.unlink()
    snapshots = folder / "snapshots"
    if snapshots.is_dir():
        for p in snapshots.iterdir():
            # ours: the marker, or (written before it existed) a step folder holding a model's glyffuser.json
            if p.is_dir() and ((p / MARKER).is_file() or re.match(r"^step-\d{8}$", p.name) and (p / "glyffuser.json").is_file()):
                shutil.rmtree(p)
        if not any(snapshots.iterdir()):
            snapshots.rmdir()


def load_checkpoint(path: Path, fingerprint: str) -> dict:
    marker = path.with_suffix(".json")
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise GlyffuserError(f"{path} has no readable marker {marker.name}: it is incomplete") from None
    if info.get("fingerprint") != fingerprint:
        raise GlyffuserError(f"{path} was made with other params or data (fingerprint {str(info.get('fingerprint'))[:12]}… "
                             f"≠ {fingerprint[:12]}…): refusing to resume from it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise GlyffuserError(f"checkpoint {path} is corrupt ({type(err).__name__}): delete it to resume from an "
                             f"older one, or delete {path.parent} to start fresh") from None
    if not isinstance(state, dict) or state.get("step") != info["step"]:
        raise GlyffuserError(f"checkpoint {path} does not hold the state its marker describes: delete it")
    return state
