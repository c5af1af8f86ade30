"""Training data in memory: glyph tensors at the training resolution, paired with token embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glyffuser.embed import definitions_digest, load_embeddings
from glyffuser.errors import GlyffuserError
from glyffuser.images import pngs_to_tensor
from glyffuser.tables import read_table


@dataclass
class GlyphSet:
    """One split: images (N,1,R,R) in [-1,1], text (N,L,D) fp16 with mask (N,L), and row metadata."""

    images: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor
    codepoints: np.ndarray
    definitions: list[str]
    radicals: np.ndarray
    sense: torch.Tensor | None = None  # (N,L) int8: each token's ';'-separated sense, -1 special/padding

    def __len__(self) -> int:
        return len(self.codepoints)


@dataclass
class TrainingData:
    train: GlyphSet
    validation: GlyphSet
    empty_text: torch.Tensor  # (L0, D) the empty prompt's tokens, for classifier-free guidance
    embedding_meta: dict


def load_training_data(definitions_path: Path, glyphs_path: Path, embeddings_path: Path, resolution: int) -> TrainingData:
    defs, _ = read_table(definitions_path, required=("codepoint", "definition", "radical", "split"))
    glyphs, _ = read_table(glyphs_path, required=("codepoint", "png"))
    emb = load_embeddings(embeddings_path)
    codepoints = defs.column("codepoint").to_numpy()
    texts = defs.column("definition").to_pylist()
    if emb.meta.get("definitions_sha256") != definitions_digest(codepoints.tolist(), texts):
        raise GlyffuserError(f"{embeddings_path} was computed from other definitions than {definitions_path}: "
                             "re-run the embed stage (dvc repro embed)")
    if glyphs.column("codepoint").to_pylist() != codepoints.tolist() or emb.codepoints.tolist() != codepoints.tolist():
        raise GlyffuserError(f"{glyphs_path} and {definitions_path} list different characters: re-run the render stage")
    splits = np.array(defs.column("split").to_pylist())
    radicals = defs.column("radical").to_numpy()
    pngs = glyphs.column("png").to_pylist()

    def subset(name: str) -> GlyphSet:
        idx = np.nonzero(splits == name)[0]
        return GlyphSet(pngs_to_tensor([pngs[i] for i in idx], resolution), emb.hidden[idx], emb.mask[idx],
                        codepoints[idx], [texts[i] for i in idx], radicals[idx],
                        None if emb.sense is None else emb.sense[idx])

    train = subset("train")
    if len(train) == 0:
        raise GlyffuserError("the train split is empty: widen render.ranges or lower render.split fractions")
    return TrainingData(train, subset("validation"), emb.empty_hidden, emb.meta)


def batch_text(text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Trim the padded token axis to the longest prompt in the batch: (B,L,D),(B,L) -> (B,l,D),(B,l)."""
    length = max(int(mask.sum(dim=1).max()), 1)
    return text[:, :length], mask[:, :length]


def sense_subsets(mask: torch.Tensor, sense: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """Caption augmentation: for a `share` of the rows whose definition has 2 or more ';'-separated senses,
    keep a random subset of its senses (each with probability 1/2, at least one) by masking out the
    other senses' tokens; special tokens stay. mask, sense: (B,L) -> the new mask (B,L).
    The kept tokens' states were computed with the whole definition in context (the encoder is not
    re-run), so a subset here is close to, not equal to, encoding the shorter definition."""
    b = mask.shape[0]
    s = sense.long().cpu()
    n_senses = s.max(dim=1).values + 1  # (B,) 0 for rows of special tokens only
    keep = torch.rand(b, max(int(n_senses.max()), 1), generator=gen) < 0.5  # (B,S)
    one = (torch.rand(b, generator=gen) * n_senses.clamp(min=1)).long()  # a sense that is always kept
    keep[torch.arange(b), one] = True
    apply = (torch.rand(b, generator=gen) < share) & (n_senses >= 2)  # (B,)
    token_kept = (s < 0) | keep.gather(1, s.clamp(min=0)) | ~apply[:, None]  # (B,L)
    return mask & token_kept.to(mask.device)
