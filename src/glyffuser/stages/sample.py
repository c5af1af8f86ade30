"""`glyffuser sample`: prompts -> a labelled grid, one PNG per sample with a manifest, or the
pipeline's fixed grid (params `sample`), which is the DVC `sample` stage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from glyffuser.artifacts.atomic import atomic_outputs, check_outputs
from glyffuser.artifacts.images import labelled_grid
from glyffuser.command import PIPELINE_FILES, run_command
from glyffuser.diffusion.pipeline import GlyffuserPipeline, choose_upsampler
from glyffuser.errors import GlyffuserError
from glyffuser.limits import clean_prompt


def read_prompts(path: Path) -> list[str]:
    """One prompt per line of a UTF-8 file; blank lines and lines starting with # (comments) are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise GlyffuserError(f"cannot read prompts file {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise GlyffuserError(f"prompts file {path} is not UTF-8 text (byte {err.start}): save it as UTF-8") from None
    prompts = []
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                prompts.append(clean_prompt(line))
            except GlyffuserError as err:
                raise GlyffuserError(f"{path}:{number}: {err}") from None
    if not prompts:
        raise GlyffuserError(f"prompts file {path} holds no prompt (one per line)")
    return prompts


def grid_outputs(out: Path, manifest: Path | None = None) -> list[Path]:
    """What `sample_grid` writes, checked (glyffuser replaces only what it wrote): call it before any work."""
    outputs = [out] + ([manifest] if manifest else [])
    check_outputs(*outputs)
    return outputs


def files_outputs(out_dir: Path, prompts: int, num_images: int, seed: int) -> list[Path]:
    """What `sample_files` writes into out_dir, checked: one PNG per (prompt index, seed), then manifest.json."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GlyffuserError(f"--out {out_dir} is a file; with --prompts-file it names a folder")
    outputs = [out_dir / f"{p:03d}-seed{seed + j}.png" for p in range(prompts) for j in range(num_images)]
    outputs.append(out_dir / "manifest.json")
    check_outputs(*outputs)
    return outputs


def sample_grid(pipe: GlyffuserPipeline, prompts: list[str], num_images: int, steps: int, guidance: float,
                scheduler: str, seed: int, out: Path, manifest: Path | None = None) -> dict:
    """Rows of `num_images` samples per prompt, the prompt written left of its row."""
    outputs = grid_outputs(out, manifest)  # before the sampling
    images = pipe(prompts, num_images=num_images, steps=steps, guidance=guidance, scheduler=scheduler, seed=seed,
                  progress=True)
    settings = {"scheduler": scheduler, "steps": steps, "guidance": guidance, "seeds": [seed + j for j in range(num_images)]}
    with atomic_outputs(*outputs) as tmps:
        labelled_grid(images, num_images, prompts, cell=max(64, images[0].width)).save(tmps[0])
        if manifest:
            tmps[1].write_text(json.dumps({"prompts": prompts, **settings, "grid": str(out)}, indent=2) + "\n")
    return {"grid": str(out), "prompts": len(prompts), **settings}


def sample_files(pipe: GlyffuserPipeline, prompts: list[str], num_images: int, steps: int, guidance: float,
                 scheduler: str, seed: int, out_dir: Path) -> dict:
    """One PNG per sample plus manifest.json (prompt, seed, scheduler, steps, guidance, path) in out_dir.

    out_dir may hold other files: only the PNGs and the manifest named here are written (replaced if
    there), and only once every sample is drawn."""
    outputs = files_outputs(out_dir, len(prompts), num_images, seed)  # before the sampling
    images = pipe(prompts, num_images=num_images, steps=steps, guidance=guidance, scheduler=scheduler, seed=seed,
                  progress=True)
    entries = [{"prompt": prompts[i // num_images], "seed": seed + i % num_images, "scheduler": scheduler,
                "steps": steps, "guidance": guidance, "path": str(path)} for i, path in enumerate(outputs[:-1])]
    with atomic_outputs(*outputs) as tmps:
        for image, tmp in zip(images, tmps):
            image.save(tmp)
        tmps[-1].write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
    return {"out_dir": str(out_dir), "images": len(entries)}


# `glyffuser sample`; the DVC stage `sample` runs it as stages/sample.py (no prompts: the params grid).
def add_arguments(p: argparse.ArgumentParser) -> None:
    from glyffuser.limits import MAX_GLYPHS, MAX_PER_PROMPT, MAX_SEED

    p.add_argument("prompt", nargs="*", help="prompts; none: the fixed grid of params `sample` (the DVC stage)")
    p.add_argument("--prompts-file", type=Path,
                   help="UTF-8, one prompt per line (blank lines and lines starting with # are skipped); writes one "
                        "PNG per sample + manifest.json into --out, beside what that folder already holds")
    p.add_argument("-n", type=int, help=f"samples per prompt, 1..{MAX_PER_PROMPT} and at most {MAX_GLYPHS:,} glyphs in all "
                                        "(default: 4, 1 with --prompts-file, sample.seeds for the grid)")
    p.add_argument("--steps", type=int, help="sampler steps, 1..the model's training timesteps (default: sample.steps)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: sample.guidance)")
    p.add_argument("--scheduler", choices=["ddpm", "ddim", "dpmsolver++"], help="sampler (default: sample.scheduler)")
    p.add_argument("--seed", type=int, default=0,
                   help=f"first seed; sample j of each prompt uses seed + j, which must stay within 0..{MAX_SEED:,}")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile the UNet: pays from about a thousand glyphs (default: sample.compile)")
    p.add_argument("--model", default=Path(PIPELINE_FILES["model"]),
                   help="model folder, or an MLflow model URI: models:/glyffuser/VERSION, runs:/RUN_ID/model "
                        "(default: %(default)s)")
    p.add_argument("--upsampler", type=Path,
                   help="upsampler folder: the glyphs come out at twice the model's side (default: the model folder's "
                        "own upsampler/, else data/upsampler when the upsampler stage has run)")
    p.add_argument("--base", action="store_true", help="the diffusion model's drafts at its own side, not upsampled")
    p.add_argument("--out", type=Path, help="grid PNG, or the folder with --prompts-file; glyffuser replaces only "
                                            "files of the kind it writes, never a folder or a read-only file")
    p.set_defaults(encoder=None)  # the encoder bundled with an MLflow --model, set when the CLI resolves the URI


def _default(value, default):
    return default if value is None else value


def command(args: argparse.Namespace) -> dict:
    from glyffuser.diffusion.process import check_sampling
    from glyffuser.limits import check_request
    from glyffuser.params import DEFAULT_PARAMS, check_guidance, load_params

    if args.prompt and args.prompts_file:
        raise GlyffuserError("give prompts on the command line or with --prompts-file, not both")
    if args.steps is not None and args.steps < 1:
        raise GlyffuserError(f"--steps must be at least 1, got {args.steps}")
    if args.guidance is not None:
        check_guidance(args.guidance, "--guidance")
    prompts = [clean_prompt(p) for p in args.prompt]
    if args.out is not None and not args.prompts_file:
        from PIL import Image

        Image.init()
        if args.out.suffix.lower() not in Image.registered_extensions():
            raise GlyffuserError(f"--out {args.out} needs an image extension (.png, .jpg, .webp, ...) for the grid")
    # Prompts with --steps, --guidance and --scheduler need no params file: outside a checkout (no ./params.yaml)
    # the rest is the pipeline's default (bf16 where the hardware has it, no compile unless --compile).
    everything_given = bool(prompts or args.prompts_file) and None not in (args.steps, args.guidance, args.scheduler)
    if everything_given and args.params == DEFAULT_PARAMS and not args.params.exists():
        steps, guidance, scheduler, compile, bf16 = args.steps, args.guidance, args.scheduler, bool(args.compile), None
    else:
        s = load_params(args.params).sample
        steps = s.steps if args.steps is None else args.steps
        guidance = s.guidance if args.guidance is None else args.guidance
        scheduler = args.scheduler or s.scheduler
        compile = s.compile if args.compile is None else args.compile
        bf16 = s.autocast()
    # Every bound and every output path is checked before the model is even loaded.
    if args.prompts_file:
        prompts, n, out = read_prompts(args.prompts_file), _default(args.n, 1), args.out or Path("samples")
    elif prompts:
        n, out, manifest = _default(args.n, 4), args.out or Path("samples.png"), None
    else:  # no prompts: the pipeline's fixed grid from params (the DVC `sample` stage)
        prompts, n = [clean_prompt(p) for p in s.prompts], _default(args.n, s.seeds)  # checked before the model loads
        out = args.out or Path("data/sample/grid.png")
        manifest = out.with_name("manifest.json")
    check_request(len(prompts), n, args.seed, steps)
    if args.prompts_file:
        files_outputs(out, len(prompts), n, args.seed)
    else:
        grid_outputs(out, manifest)
    pipe = GlyffuserPipeline.from_pretrained(args.model, bf16=bf16, compile=compile, encoder=args.encoder,
                                             upsampler=choose_upsampler(args.model, args.upsampler, args.base))
    check_sampling(steps, guidance, pipe.scheduler_config)
    if args.prompts_file:
        return sample_files(pipe, prompts, n, steps, guidance, scheduler, args.seed, out)
    return sample_grid(pipe, prompts, n, steps, guidance, scheduler, args.seed, out, manifest)


def main(argv: list[str] | None = None, before=None) -> int:
    return run_command("sample", "generate glyphs from English prompts with a trained model", add_arguments, command,
                       argv, before)
