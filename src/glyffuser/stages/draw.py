"""Stage `draw`: every sample the evaluate stage judges, drawn once and saved as the glyphs a user would see.

The kinds of sample are one list (`kinds`), each a spec of prompts, seeds, targets and guidance:
- heldout: K samples from each of N test-split definitions (never trained on), seeds 0..N·K-1 in codepoint order, so
  two models' samples pair up by (character, seed); the target is the radical of the character the definition belongs to;
- empty: C of those characters drawn from the empty prompt (guidance 0), seeds 10,000 + i: a control;
- shuffled: the same C characters drawn from another one's definition, seeds 20,000 + i: a control;
- grid: the sample stage's prompt grid, its targets from `evaluate.prompt_radicals`;
- sweep: `evaluate.seed_sweep_prompt` over many seeds (how reliably one prompt draws its radical);
- train: M training definitions once each, seeds 30,000 + i (the execution gap without the generalisation gap).
Samples are drawn with the sample stage's sampler settings and taken through the cascade's upsampler when there is one.
The table keeps each final glyph (`png`, the output side) and its draft (`base_png`, the model's side) as 8-bit PNGs:
the evaluate stage judges exactly these, so a changed metric re-scores without re-drawing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from glyffuser.artifacts.atomic import atomic_outputs, check_output
from glyffuser.artifacts.embeddings import load_embeddings
from glyffuser.artifacts.glyph_tables import load_glyph_splits
from glyffuser.artifacts.images import tensor_to_images, to_png
from glyffuser.artifacts.tables import write_table
from glyffuser.command import inputs, run_command
from glyffuser.diffusion.pipeline import GlyffuserPipeline
from glyffuser.errors import GlyffuserError
from glyffuser.params import Params
from glyffuser.progress import progress

BATCH = 64  # glyphs per sampler batch
NONE = -1  # target_codepoint / prompt_codepoint of a sample drawn from no character's definition


@dataclass(frozen=True)
class DrawPaths:
    model: Path
    definitions: Path
    glyphs: Path
    embeddings: Path
    out: Path  # the samples table (data/draw/samples.parquet)
    upsampler: Path | None = None  # the cascade's upsampler folder; None: the model's own drafts


@dataclass
class Kind:
    """One kind of sample: N rows of the samples table."""

    name: str  # the table's `kind`
    prompts: list[str]  # (N,) the text each sample is drawn from
    text: torch.Tensor  # (N,L,D) its encoder states
    mask: torch.Tensor  # (N,L)
    empty: torch.Tensor  # (1,L,D) the empty prompt's states, classifier-free guidance's unconditional input
    seeds: np.ndarray  # (N,) sampler seeds
    target_codepoint: np.ndarray  # (N,) the character whose radical is the target (NONE for grid and sweep)
    prompt_codepoint: np.ndarray  # (N,) the character whose definition is the prompt (NONE: a typed prompt or none)
    target_radical: np.ndarray  # (N,) the Kangxi radical the sample should draw
    guidance: float  # classifier-free guidance scale


def check_inputs(paths: DrawPaths, pipe: GlyffuserPipeline, emb, train, test) -> dict[int, int]:
    """The embeddings match the model's encoder and hold every train and test character; codepoint -> row."""
    if emb.meta.get("encoder_sha256", pipe.info["encoder_sha256"]) != pipe.info["encoder_sha256"]:
        raise GlyffuserError(f"{paths.embeddings} comes from another text encoder than the model in {paths.model}")
    row_of = {int(cp): i for i, cp in enumerate(emb.codepoints)}
    if missing := [int(cp) for cp in np.concatenate([train.codepoints, test.codepoints]) if int(cp) not in row_of]:
        raise GlyffuserError(f"{paths.embeddings} has no embedding of U+{missing[0]:04X} ({len(missing)} characters "
                             f"missing): it was made from other definitions than {paths.definitions}; re-run the embed "
                             "stage (dvc repro embed)")
    return row_of


def kinds(params: Params, pipe: GlyffuserPipeline, emb, row_of: dict[int, int], train, test) -> list[Kind]:
    """Every kind of sample, in the order drawn. Held-out characters: N of the test split (all by default) in codepoint
    order; C controls among them and a random cycle that gives each control another's definition (generator base.seed);
    M training characters (their own generator, so the draws above stay as they are without them)."""
    e, s, seed = params.evaluate, params.sample, params.base.seed
    rng = np.random.default_rng(seed)
    n = len(test.radicals) if e.heldout_characters == "all" else min(e.heldout_characters, len(test.radicals))
    if n < 2:
        raise GlyffuserError("the test split has fewer than 2 characters: widen render.ranges or raise render.split.test")
    pick = np.arange(n) if n == len(test.radicals) else np.sort(rng.choice(len(test.radicals), n, replace=False))
    c = min(e.control_characters, n)
    ctrl = np.sort(rng.choice(n, c, replace=False))
    order = rng.permutation(c)
    shuffle = np.empty(c, dtype=np.int64)
    shuffle[order] = ctrl[np.roll(order, -1)]
    m = min(e.train_characters, len(train.radicals))
    train_pick = np.sort(np.random.default_rng([seed, 1]).choice(len(train.radicals), m, replace=False))

    def from_definitions(name, split, chars, prompt_chars, seed0, guidance=s.guidance) -> Kind:
        rows = np.array([row_of[int(cp)] for cp in split.codepoints[prompt_chars]], dtype=np.int64)
        return Kind(name, [split.definitions[i] for i in prompt_chars], emb.hidden[rows], emb.mask[rows],
                    emb.empty_hidden, seed0 + np.arange(len(chars)), split.codepoints[chars].astype(np.int64),
                    split.codepoints[prompt_chars].astype(np.int64), split.radicals[chars].astype(np.int64), guidance)

    def from_prompts(name, prompts: list[str], seeds: np.ndarray) -> Kind:
        text, mask, empty = pipe.encode(prompts)
        none = np.full(len(prompts), NONE, dtype=np.int64)
        return Kind(name, prompts, text, mask, empty, seeds, none, none,
                    np.array([e.prompt_radicals[p] for p in prompts], dtype=np.int64), s.guidance)

    held = np.repeat(pick, e.samples_per_character)  # (N·K,) K samples of each character, one after another
    empty = from_definitions("empty", test, pick[ctrl], pick[ctrl], 10_000, guidance=0.0)
    empty.prompts, empty.prompt_codepoint = [""] * c, np.full(c, NONE, dtype=np.int64)
    return [
        from_definitions("heldout", test, held, held, 0),
        empty,
        from_definitions("shuffled", test, pick[ctrl], pick[shuffle], 20_000),
        from_prompts("grid", [p for p in s.prompts for _ in range(s.seeds)], np.tile(np.arange(s.seeds), len(s.prompts))),
        from_prompts("sweep", [e.seed_sweep_prompt] * e.seed_sweep_seeds, np.arange(e.seed_sweep_seeds)),
        from_definitions("train", train, train_pick, train_pick, 30_000),
    ]


def draw(pipe: GlyffuserPipeline, kind: Kind, params: Params, bar) -> tuple[torch.Tensor, torch.Tensor]:
    """(drafts (N,1,R,R), final glyphs (N,1,2R,2R) or the drafts again without an upsampler), both in [-1, 1]."""
    s = params.sample
    if not len(kind.seeds):
        side = pipe.output_resolution
        return torch.zeros(0, 1, pipe.resolution, pipe.resolution), torch.zeros(0, 1, side, side)
    base = torch.cat([pipe.sample(kind.text[i:i + BATCH], kind.mask[i:i + BATCH], kind.empty,
                                  kind.seeds[i:i + BATCH].tolist(), s.steps, kind.guidance, s.scheduler, bar)
                      for i in range(0, len(kind.seeds), BATCH)])
    return base, pipe.upscale(base)


def run_draw(params: Params, paths: DrawPaths, pipe: GlyffuserPipeline | None = None) -> dict:
    """`pipe`: draw from this pipeline instead of the model in paths.model (a benchmark's variant)."""
    check_output(paths.out)
    start = time.perf_counter()
    s = params.sample
    from_folder = pipe is None  # not a pipeline a benchmark handed in: the evaluate stage registers this model
    pipe = pipe or GlyffuserPipeline.from_pretrained(paths.model, bf16=s.autocast(), compile=s.compile,
                                                     upsampler=paths.upsampler or False)
    splits = load_glyph_splits(paths.definitions, paths.glyphs, pipe.resolution)
    emb = load_embeddings(paths.embeddings)
    row_of = check_inputs(paths, pipe, emb, splits["train"], splits["test"])
    plan = kinds(params, pipe, emb, row_of, splits["train"], splits["test"])
    print("draw: " + ", ".join(f"{len(k.seeds)} {k.name}" for k in plan), flush=True)
    columns: dict[str, list] = {name: [] for name in ("kind", "prompt", "target_codepoint", "prompt_codepoint", "seed",
                                                      "guidance", "target_radical", "png", "base_png")}
    steps = sum(-(-len(k.seeds) // BATCH) for k in plan) * s.steps
    with progress(steps, desc="draw: sampling", unit="step") as bar:
        for k in plan:
            base, final = draw(pipe, k, params, bar)
            columns["kind"] += [k.name] * len(k.seeds)
            columns["prompt"] += k.prompts
            for name in ("target_codepoint", "prompt_codepoint", "target_radical"):
                columns[name].append(getattr(k, name))
            columns["seed"].append(k.seeds)
            columns["guidance"].append(np.full(len(k.seeds), k.guidance))
            columns["png"] += [to_png(im) for im in tensor_to_images(final)]  # the cascade's output side
            columns["base_png"] += [to_png(im) for im in tensor_to_images(base)]  # the diffusion model's drafts
    types = {"target_codepoint": pa.int32(), "prompt_codepoint": pa.int32(), "seed": pa.int64(),
             "guidance": pa.float32(), "target_radical": pa.int16()}
    table = pa.table({name: pa.array(np.concatenate(v), types[name]) if name in types else v
                      for name, v in columns.items()})
    minutes = round((time.perf_counter() - start) / 60, 2)
    meta = {"model": str(paths.model) if from_folder else None, "upsampler": str(paths.upsampler) if pipe.upsampler is not None else None,
            "model_info": pipe.info, "resolution": pipe.output_resolution, "base_resolution": pipe.resolution,
            "sampler": {"steps": s.steps, "guidance": s.guidance, "scheduler": s.scheduler}, "minutes": minutes}
    with atomic_outputs(paths.out) as (tmp,):
        write_table(table, tmp, meta)
    return {"samples": {k.name: len(k.seeds) for k in plan}, "minutes": minutes}


# `glyffuser draw`; the DVC stage `draw` runs it as stages/draw.py.
def add_arguments(p) -> None:
    inputs(p, "model", "definitions", "glyphs", "embeddings")
    p.add_argument("--upsampler", type=Path,
                   help="the cascade's upsampler folder (default: data/upsampler when the upsampler stage has run for "
                        "this model's side)")
    p.add_argument("--base", action="store_true", help="draw the model's own drafts, without an upsampler")
    p.add_argument("--out", type=Path, default=Path("data/draw/samples.parquet"))


def command(args) -> dict:
    from glyffuser.diffusion.pipeline import choose_upsampler
    from glyffuser.params import load_params

    upsampler = choose_upsampler(args.model, args.upsampler, args.base)
    paths = DrawPaths(args.model, args.definitions, args.glyphs, args.embeddings, args.out, upsampler or None)
    return run_draw(load_params(args.params), paths)


def main(argv: list[str] | None = None) -> int:
    return run_command("draw", __doc__.splitlines()[0], add_arguments, command, argv)
