"""data/embed/embeddings.parquet, read: per-token text embeddings of every definition and of the empty prompt.

The embed stage (stages/embed.py) writes it; train, evaluate and figures read it here without
loading the text encoder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glyffuser.artifacts.tables import read_table
from glyffuser.errors import GlyffuserError

EMPTY_PROMPT_CODEPOINT = -1


def definitions_digest(codepoints: list[int], definitions: list[str]) -> str:
    """Content hash of (codepoint, definition) pairs, stored with the embeddings they produced."""
    h = hashlib.sha256()
    for cp, text in zip(codepoints, definitions):
        h.update(f"{cp}\t{text}\n".encode())
    return h.hexdigest()


@dataclass
class Embeddings:
    """Token embeddings for a set of characters, padded: hidden (N, L, dim), mask (N, L)."""

    codepoints: np.ndarray  # (N,) int32
    hidden: torch.Tensor  # (N, L, dim) float16, zeros past each row's tokens
    mask: torch.Tensor  # (N, L) bool, True on real tokens
    empty_hidden: torch.Tensor  # (n_empty, dim) the empty prompt's tokens
    meta: dict
    sense: torch.Tensor | None = None  # (N, L) int8: each token's ';'-separated sense, -1 special/padding


def load_embeddings(path: Path) -> Embeddings:
    table, meta = read_table(path, required=("codepoint", "n_tokens", "hidden"))
    missing = [k for k in ("dim", "encoder_sha256", "max_length") if k not in meta]
    if missing:
        raise GlyffuserError(f"{path}: its metadata lacks {missing[0]!r}: re-run the embed stage (dvc repro embed)")
    codepoints = table.column("codepoint").to_numpy()
    n_tokens = table.column("n_tokens").to_numpy().astype(np.int64)
    dim = int(meta["dim"])
    flat = table.column("hidden").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    if flat.size != int(n_tokens.sum()) * dim:
        raise GlyffuserError(f"{path}: hidden states do not match n_tokens × dim ({dim}); the file is corrupt")
    rows = np.split(flat.reshape(-1, dim), np.cumsum(n_tokens)[:-1])
    empty = [i for i, cp in enumerate(codepoints) if cp == EMPTY_PROMPT_CODEPOINT]
    if len(empty) != 1:
        raise GlyffuserError(f"{path}: expected exactly one empty-prompt row (codepoint -1), found {len(empty)}")
    keep = [i for i in range(len(codepoints)) if i != empty[0]]
    length = int(n_tokens[keep].max()) if keep else 1
    hidden = torch.zeros(len(keep), length, dim, dtype=torch.float16)
    mask = torch.zeros(len(keep), length, dtype=torch.bool)
    for j, i in enumerate(keep):
        hidden[j, : n_tokens[i]] = torch.from_numpy(rows[i].copy())
        mask[j, : n_tokens[i]] = True
    sense = None
    if "sense" in table.column_names:  # older files lack it: no caption augmentation from them
        sense_rows = table.column("sense").to_pylist()
        sense = torch.full((len(keep), length), -1, dtype=torch.int8)
        for j, i in enumerate(keep):
            if len(sense_rows[i]) != n_tokens[i]:
                raise GlyffuserError(f"{path}: senses do not match n_tokens; the file is corrupt")
            sense[j, : n_tokens[i]] = torch.tensor(sense_rows[i], dtype=torch.int8)
    return Embeddings(codepoints[keep].astype(np.int32), hidden, mask, torch.from_numpy(rows[empty[0]].copy()), meta,
                      sense)
