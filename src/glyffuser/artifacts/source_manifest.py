"""data/sources/sources.json: what the sources stage copied (font, Unihan files, decomposition table)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from glyffuser.errors import GlyffuserError

MANIFEST = "sources.json"


@dataclass(frozen=True)
class SourceManifest:
    """What data/sources/ holds; written as sources.json and read by the render stage."""

    font_file: str
    font_index: int
    font_name: str
    font_sha256: str
    unicode_version: str
    unihan_files: list[str]
    decomposition_file: str
    origin: dict[str, str]

    @staticmethod
    def read(sources_dir: Path) -> SourceManifest:
        path = sources_dir / MANIFEST
        try:
            return SourceManifest(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise GlyffuserError(f"{path} is missing: run the sources stage first (dvc repro sources)") from None
        except (ValueError, TypeError) as err:  # not JSON, not an object, or other keys than a manifest has
            raise GlyffuserError(f"{path} is not a sources manifest ({str(err).splitlines()[0]}): "
                                 "re-run the sources stage (dvc repro -f sources)") from None
