"""Stage `embed`: definitions -> per-token text embeddings in Parquet.

One row per character: the encoder's last hidden states for its real (non-padding) tokens, stored
flat as float16 (n_tokens·dim values), plus one row with codepoint -1 for the empty prompt, which
classifier-free guidance uses as the unconditional input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from glyffuser.atomic import atomic_outputs, check_output
from glyffuser.encoders import TextEncoder, fingerprint, quiet_transformers, resolve_encoder
from glyffuser.errors import GlyffuserError
from glyffuser.params import EmbedParams
from glyffuser.progress import progress
from glyffuser.tables import read_table, write_table

EMPTY_PROMPT_CODEPOINT = -1


def definitions_digest(codepoints: list[int], definitions: list[str]) -> str:
    """Content hash of (codepoint, definition) pairs, stored with the embeddings they produced."""
    h = hashlib.sha256()
    for cp, text in zip(codepoints, definitions):
        h.update(f"{cp}\t{text}\n".encode())
    return h.hexdigest()


def run_embed(params: EmbedParams, definitions_path: Path, out_path: Path) -> dict:
    check_output(out_path)
    table, _ = read_table(definitions_path, columns=["codepoint", "definition"])
    codepoints = table.column("codepoint").to_pylist()
    texts = table.column("definition").to_pylist()
    quiet_transformers()
    resolved = resolve_encoder(params.encoder)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = TextEncoder(resolved, params.max_length, device)

    # The empty prompt first, then definitions in length order so each batch pads little.
    all_texts = ["", *texts]
    all_codepoints = [EMPTY_PROMPT_CODEPOINT, *codepoints]
    order = sorted(range(len(all_texts)), key=lambda i: len(all_texts[i]))
    hidden: list[np.ndarray | None] = [None] * len(all_texts)
    truncated = [False] * len(all_texts)
    senses: list[np.ndarray | None] = [None] * len(all_texts)  # each token's ';'-separated sense (caption augmentation)
    with progress(len(order), desc="embed", unit="text") as bar:
        for start in range(0, len(order), params.batch_size):
            idx = order[start : start + params.batch_size]
            batch_texts = [all_texts[i] for i in idx]
            states, lengths = encoder.encode(batch_texts)
            for i, s, n, sense in zip(idx, states, lengths, encoder.senses(batch_texts)):
                if len(sense) != len(s):
                    raise GlyffuserError(f"the tokenizer of {resolved.name} gave {len(sense)} offsets for "
                                         f"{len(s)} tokens of {all_texts[i]!r}")
                hidden[i], truncated[i], senses[i] = s, n > params.max_length, sense
            bar.update(len(idx))

    dim = encoder.dim
    flat = np.concatenate([h.reshape(-1) for h in hidden]).astype(np.float16)
    offsets = np.cumsum([0] + [h.size for h in hidden]).astype(np.int32)
    hidden_col = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float16()))
    n_tokens = [h.shape[0] for h in hidden]
    meta = {
        "encoder": resolved.name,
        "encoder_origin": resolved.origin,
        "encoder_revision": resolved.revision,
        "encoder_sha256": fingerprint(resolved.path),
        "model_type": encoder.model_type,
        "dim": dim,
        "max_length": params.max_length,
        "dtype": "float16",
        "definitions_sha256": definitions_digest(codepoints, texts),
    }
    report = {"texts": len(texts), "truncated": int(sum(truncated[1:])), "dim": dim,
              "mean_tokens": float(np.mean(n_tokens[1:])), "max_tokens": int(max(n_tokens))}
    out = pa.table({
        "codepoint": pa.array(all_codepoints, pa.int32()),
        "text": pa.array(all_texts, pa.string()),
        "n_tokens": pa.array(n_tokens, pa.int16()),
        "truncated": pa.array(truncated, pa.bool_()),
        "hidden": hidden_col,
        "sense": pa.array([x.tolist() for x in senses], pa.list_(pa.int8())),
    })
    with atomic_outputs(out_path) as (tmp,):
        write_table(out, tmp, {**meta, "report": report})
    return {**meta, **report}


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
