"""`glyffuser sample`: prompts -> a labelled grid, one PNG per sample with a manifest, or the
pipeline's fixed grid (params `sample`), which is the DVC `sample` stage."""

from __future__ import annotations

import json
from pathlib import Path

from glyffuser.artifacts.atomic import atomic_outputs, check_outputs
from glyffuser.artifacts.images import labelled_grid
from glyffuser.diffusion.pipeline import GlyffuserPipeline
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
        labelled_grid(images, num_images, prompts).save(tmps[0])
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
