"""Stage `embed`: definitions -> per-token text embeddings in Parquet.

One row per character: the encoder's last hidden states for its real (non-padding) tokens, stored
flat as float16 (n_tokens·dim values), plus one row with codepoint -1 for the empty prompt, which
classifier-free guidance uses as the unconditional input.

`embed.radical_hint` (a diagnostic, off by default) encodes each definition after its character's radical, as
"radical fish: a kind of carp" (the radical's own first meaning in Unihan): a model trained and evaluated on these
is told the answer, so its adherence is the ceiling of any text->radical prior (issue 42). The hint's tokens are
marked like special tokens, so caption augmentation never drops them.

`embed.radical_prior` puts a guess there instead: the radical a head on the plain text embedding reads from the
definition (diffusion/prior.py; cross-fitted on training definitions). The embeddings' metadata carries that head,
the train stage puts it into the model folder, and the pipeline guesses the same way for typed prompts.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from glyffuser.artifacts.atomic import atomic_outputs, check_output
from glyffuser.artifacts.embeddings import EMPTY_PROMPT_CODEPOINT, definitions_digest
from glyffuser.artifacts.tables import read_table, write_table
from glyffuser.command import inputs, run_command
from glyffuser.diffusion import prior as radical_prior
from glyffuser.diffusion.encoders import TextEncoder, fingerprint, quiet_transformers, resolve_encoder
from glyffuser.errors import GlyffuserError
from glyffuser.params import EmbedParams
from glyffuser.progress import progress


def radical_names(codepoints: list[int], definitions: list[str]) -> dict[int, str]:
    """Kangxi radical (1..214) -> its first meaning: the definition of the radical's own character (⿂ -> 魚 ->
    "fish"), up to the first ';' or ','; "radical N" where that character has no definition here."""
    definition_of = dict(zip(codepoints, definitions))
    names = {}
    for r in range(1, 215):
        char = unicodedata.normalize("NFKC", chr(0x2F00 + r - 1))  # the Kangxi radical's unified ideograph
        meaning = definition_of.get(ord(char), "").split(";")[0].split(",")[0].strip()
        names[r] = meaning or f"radical {r}"
    return names


def hint_prefixes(table: pa.Table) -> list[str]:
    """Per definition, the text `embed.radical_hint` puts before it: "radical fish: "."""
    names = radical_names(table.column("codepoint").to_pylist(), table.column("definition").to_pylist())
    return [f"radical {names[int(r)]}: " for r in table.column("radical").to_pylist()]


def guess_radicals(params: EmbedParams, table: pa.Table, encoder: TextEncoder) -> tuple[np.ndarray, dict, dict]:
    """`embed.radical_prior`: per definition its guessed radical (cross-fitted on the train split), the prior's
    metadata (the head fit on all training definitions) and its accuracy per split (the evaluate stage reports it
    per third of the held-out definitions)."""
    states, _ = encode_all(encoder, table.column("definition").to_pylist(), params.batch_size, "embed (plain)")
    pooled = radical_prior.pooled_rows(states)  # (N, D)
    radicals = np.asarray(table.column("radical").to_pylist(), dtype=np.int64)
    split = np.asarray(table.column("split").to_pylist())
    train = split == "train"
    if train.sum() < params.prior_folds * 2:
        raise GlyffuserError(f"embed.radical_prior needs training definitions to fit on: {int(train.sum())} for "
                             f"{params.prior_folds} folds")
    head = radical_prior.fit_prior(pooled[train], radicals[train], params.prior_tau)
    guess = head.predict(pooled)
    guess[train] = radical_prior.cross_fit(pooled[train], radicals[train], params.prior_folds, params.prior_tau)
    names = radical_names(table.column("codepoint").to_pylist(), table.column("definition").to_pylist())
    # train: the cross-fitted guesses (what tuning may look at), test: the stored head's
    report = {f"prior_accuracy_{name}": float((guess[rows] == radicals[rows]).mean()) if rows.any() else None
              for name, rows in (("train", train), ("test", split == "test"))}
    if params.prior_true_share > 0:  # how far the UNet learns to trust a guess: this share of training definitions
        told = train & (np.random.default_rng([0, 42]).random(len(train)) < params.prior_true_share)
        guess[told] = radicals[told]  # ... is encoded after its true radical, as if the guess were always right
    return guess, radical_prior.to_meta(head, names, params.prior_folds), report


def encode_all(encoder: TextEncoder, texts: list[str], batch_size: int, desc: str):
    """Every text's hidden states (n_tokens, dim) and token count before truncation, in length-ordered batches."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    states: list = [None] * len(texts)
    lengths = [0] * len(texts)
    with progress(len(order), desc=desc, unit="text") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            for i, s, n in zip(idx, *encoder.encode([texts[i] for i in idx])):
                states[i], lengths[i] = s, n
            bar.update(len(idx))
    return states, lengths


def run_embed(params: EmbedParams, definitions_path: Path, out_path: Path) -> dict:
    check_output(out_path)
    if params.radical_hint and params.radical_prior:
        raise GlyffuserError("embed.radical_hint (the true radical) and embed.radical_prior (a guessed one) both put "
                             "a radical before each definition: turn one off")
    guessing = ["radical", "split"] if params.radical_prior else ["radical"] if params.radical_hint else []
    table, _ = read_table(definitions_path, columns=["codepoint", "definition", *guessing])
    codepoints = table.column("codepoint").to_pylist()
    texts = table.column("definition").to_pylist()
    quiet_transformers()
    resolved = resolve_encoder(params.encoder)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = TextEncoder(resolved, params.max_length, device)
    prior_meta, prior_report, guessed = None, {}, None
    if params.radical_prior:
        guessed, prior_meta, prior_report = guess_radicals(params, table, encoder)
        prefixes = [radical_prior.hint(prior_meta["names"][int(g)]) for g in guessed]
    else:
        prefixes = hint_prefixes(table) if params.radical_hint else [""] * len(texts)

    # The empty prompt first, then definitions in length order so each batch pads little.
    all_prefixes = ["", *prefixes]
    all_texts = ["", *(p + t for p, t in zip(prefixes, texts))]
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
                if all_prefixes[i]:  # the hint's tokens (after the first special token) are kept like special ones
                    hinted = len(encoder.senses([all_prefixes[i].strip()])[0]) - 2  # less [CLS] and [SEP]
                    sense = sense.copy()
                    sense[1:1 + hinted] = -1
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
        "definitions_sha256": definitions_digest(codepoints, texts),  # the definitions before any hint
        **({"radical_hint": True} if params.radical_hint else {}),
        **({"radical_prior": prior_meta} if prior_meta else {}),
    }
    report = {"texts": len(texts), "truncated": int(sum(truncated[1:])), "dim": dim,
              "mean_tokens": float(np.mean(n_tokens[1:])), "max_tokens": int(max(n_tokens)), **prior_report}
    out = pa.table({
        "codepoint": pa.array(all_codepoints, pa.int32()),
        "text": pa.array(all_texts, pa.string()),
        "n_tokens": pa.array(n_tokens, pa.int16()),
        "truncated": pa.array(truncated, pa.bool_()),
        "hidden": hidden_col,
        "sense": pa.array([x.tolist() for x in senses], pa.list_(pa.int8())),
        # embed.radical_prior: the radical each text was encoded after (0: none, the empty prompt)
        **({"guessed_radical": pa.array([0, *guessed.tolist()], pa.int16())} if guessed is not None else {}),
    })
    with atomic_outputs(out_path) as (tmp,):
        write_table(out, tmp, {**meta, "report": report})
    return {**{k: v for k, v in meta.items() if k != "radical_prior"}, **report}


# `glyffuser embed`; the DVC stage `embed` runs it as stages/embed.py.
def add_arguments(p) -> None:
    inputs(p, "definitions")
    p.add_argument("--out", type=Path, default=Path("data/embed/embeddings.parquet"))


def command(args) -> dict:
    from glyffuser.params import load_params

    return run_embed(load_params(args.params).embed, args.definitions, args.out)


def main(argv: list[str] | None = None) -> int:
    return run_command("embed", __doc__.splitlines()[0], add_arguments, command, argv)
