"""Progress bars that suit both a terminal and a log file.

On a terminal: an ordinary tqdm bar, redrawn in place. Anywhere else (CI, `dvc repro > log`, a
queued experiment): the same tqdm text, but written as whole lines at most every `log_interval`
seconds, with no carriage returns to pile up in the log.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class _Lines:
    """A stream for tqdm that turns each in-place redraw into one plain line."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").replace("\x1b[A", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0, log_interval: float = 30.0,
             stream: TextIO | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr: live on a terminal, one line per `log_interval` seconds in a log."""
    stream = stream or sys.stderr
    interactive = hasattr(stream, "isatty") and stream.isatty()
    if interactive:
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=stream, dynamic_ncols=True,
                    mininterval=0.5, **kwargs)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=_Lines(stream), ncols=100,
                mininterval=log_interval, maxinterval=log_interval, **kwargs)
