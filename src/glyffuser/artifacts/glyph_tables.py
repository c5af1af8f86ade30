"""The render stage's two tables read together, checked to list the same characters in the same order:

    definitions.parquet  codepoint, character, definition, radical, split, ...
    glyphs.parquet       codepoint, png

`read_glyph_tables` is the one reader; on top of it `load_glyph_splits` (glyphs + radicals, for the judge)
and diffusion/training.py's `load_training_data` (glyphs + token embeddings)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glyffuser.artifacts.images import pngs_to_tensor
from glyffuser.artifacts.tables import read_table
from glyffuser.errors import GlyffuserError


def read_glyph_tables(definitions_path: Path, glyphs_path: Path, columns: tuple[str, ...] = ()):
    """(definitions table with codepoint + `columns`, glyphs table with codepoint + png), row-aligned."""
    defs, _ = read_table(definitions_path, required=("codepoint", *columns))
    glyphs, _ = read_table(glyphs_path, required=("codepoint", "png"))
    if glyphs.column("codepoint").to_pylist() != defs.column("codepoint").to_pylist():
        raise GlyffuserError(f"{glyphs_path} and {definitions_path} list different characters: re-run the render stage")
    return defs, glyphs


@dataclass
class LabelledGlyphs:
    """Glyphs of one split at one resolution: images (N,1,R,R) in [-1,1], radicals 1..214."""

    images: torch.Tensor
    radicals: np.ndarray
    codepoints: np.ndarray
    definitions: list[str]


def load_glyph_splits(definitions_path: Path, glyphs_path: Path, resolution: int) -> dict[str, LabelledGlyphs]:
    """The train, validation and test glyphs with their radicals (the judge's data)."""
    defs, glyphs = read_glyph_tables(definitions_path, glyphs_path, ("definition", "radical", "split"))
    codepoints = defs.column("codepoint").to_numpy()
    images = pngs_to_tensor(glyphs.column("png").to_pylist(), resolution, glyphs_path, codepoints.tolist())
    splits = np.array(defs.column("split").to_pylist())
    radicals = defs.column("radical").to_numpy().astype(np.int64)
    texts = defs.column("definition").to_pylist()
    out = {}
    for name in ("train", "validation", "test"):
        idx = np.nonzero(splits == name)[0]
        out[name] = LabelledGlyphs(images[idx], radicals[idx], codepoints[idx], [texts[i] for i in idx])
    return out
