"""Interrupted while outputs are being swapped in: the old outputs or the new ones, never a missing file (issue 29).

Each case interrupts `atomic_outputs` between its renames, as Ctrl+C, SIGTERM or a crash would, on real files."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from glyffuser.artifacts.atomic import atomic_outputs, recover_stale_staging
from tests.conftest import REPO


def write_old(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text('"old a"')
    b.write_text('"old b"')
    return a, b


def interrupt_after_first_rename(monkeypatch, action):
    """os.replace that runs `action` once the first old output has been moved aside."""
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".old"):
            monkeypatch.setattr(os, "replace", real_replace)
            action()

    monkeypatch.setattr(os, "replace", replace)


def test_ctrl_c_during_the_swap_finishes_it_then_interrupts(tmp_path, monkeypatch):
    a, b = write_old(tmp_path)
    # Ctrl+C as in a terminal, whatever this process inherited (a background job starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with atomic_outputs(a, b) as (ta, tb):
                ta.write_text('"new a"')
                tb.write_text('"new b"')
                interrupt_after_first_rename(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGINT))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert a.read_text() == '"new a"' and b.read_text() == '"new b"'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no staging folder left


def test_any_exception_during_the_swap_puts_the_old_outputs_back(tmp_path, monkeypatch):
    a, b = write_old(tmp_path)

    def crash():
        raise RuntimeError("a bug, or MemoryError, between two renames")

    with pytest.raises(RuntimeError):
        with atomic_outputs(a, b) as (ta, tb):
            ta.write_text('"new a"')
            tb.write_text('"new b"')
            interrupt_after_first_rename(monkeypatch, crash)
    assert a.read_text() == '"old a"' and b.read_text() == '"old b"'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


SIGTERM_SCRIPT = """
import os, signal, sys
from pathlib import Path
from glyffuser.artifacts.atomic import atomic_outputs, recover_stale_staging
from glyffuser.command import run_command

out = Path(sys.argv[1])
real_replace = os.replace

def replace(src, dst):
    real_replace(src, dst)
    if str(dst).endswith(".old"):
        os.replace = real_replace
        os.kill(os.getpid(), signal.SIGTERM)

def command(args):
    with atomic_outputs(out / "a.json", out / "b.json") as (ta, tb):
        ta.write_text('"new a"')
        tb.write_text('"new b"')
        os.replace = replace
    raise AssertionError("SIGTERM should have stopped the command after the swap")

sys.exit(run_command("swap", "", lambda p: None, command, []))
"""


def test_sigterm_during_the_swap_finishes_it_then_exits_143(tmp_path):
    write_old(tmp_path)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SIGTERM_SCRIPT), str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 143, result.stderr
    assert result.stderr.strip() == "glyffuser: terminated"
    assert (tmp_path / "a.json").read_text() == '"new a"' and (tmp_path / "b.json").read_text() == '"new b"'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_staging_folder_left_by_a_killed_process_is_recovered_on_the_next_run(tmp_path):
    # SIGKILL between moving glyphs.parquet aside and placing the new one: the old copy sits in staging
    staging = tmp_path / f".definitions.parquet.{dead_pid()}.k3j_x9a2.tmp"
    staging.mkdir()
    (staging / "glyphs.parquet.old").write_bytes(b"PAR1 old glyphs")
    (staging / "definitions.parquet").write_bytes(b"PAR1 new, never placed")
    (tmp_path / "definitions.parquet").write_bytes(b"PAR1 placed")
    live = tmp_path / f".preview.png.{os.getpid()}.abcdefgh.tmp"  # a running process's staging is left alone
    live.mkdir()

    with atomic_outputs(tmp_path / "report.json") as (tmp,):
        tmp.write_text("{}")
    assert (tmp_path / "glyphs.parquet").read_bytes() == b"PAR1 old glyphs"
    assert (tmp_path / "definitions.parquet").read_bytes() == b"PAR1 placed"
    assert not staging.exists() and live.is_dir()
    assert recover_stale_staging(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, "definitions.parquet", "glyphs.parquet", "report.json"])
    Path(live).rmdir()
