import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from glyffuser.diffusion.pipeline import GlyffuserPipeline
from glyffuser.diffusion.process import SAMPLERS
from glyffuser.errors import GlyffuserError
from tests.conftest import REPO

PROMPTS = ["a kind of fish", "a small bird", "a river"]


def border_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image (N, R, R) in model space: mean and std of the outermost pixel ring, which is blank
    paper (+1) in every real glyph (the render margin)."""
    ring = np.concatenate([x[:, 0, :], x[:, -1, :], x[:, :, 0], x[:, :, -1]], axis=1)
    return ring.mean(axis=1), ring.std(axis=1)


def looks_like_glyphs(images):
    """Concretely 'not noise': white paper around the glyph, a tight background, ink present.
    Measured on this test's tiny model: border mean 0.73-0.91 by sampler; pure noise gives ~0,
    a grey page < 0.6, and DPM-Solver++ diverging (salt and pepper) a border std ~0.8."""
    x = np.stack([np.asarray(im, dtype=np.float32) / 127.5 - 1 for im in images])
    mean, std = border_stats(x)
    assert mean.mean() > 0.65, f"paper is not white: border mean {mean.mean():.2f}"
    assert (mean < 0.5).mean() <= 0.1, f"{(mean < 0.5).mean():.0%} of samples on a grey page"
    assert std.mean() < 0.3, f"background is noisy: border std {std.mean():.2f}"
    ink = (x < 0).mean(axis=(1, 2))
    assert ink.min() > 0.03, "a sample without ink"


@pytest.mark.parametrize("scheduler", SAMPLERS)
def test_every_scheduler_draws_glyphs(tiny_model, scheduler):
    pipe = GlyffuserPipeline.from_pretrained(tiny_model[0], device="cpu")
    images = pipe(PROMPTS, num_images=4, steps=20, guidance=3.0, scheduler=scheduler)
    assert len(images) == 12 and images[0].size == (16, 16) and images[0].mode == "L"
    looks_like_glyphs(images)


def test_sampling_returns_finite_values_in_range(tiny_model):
    from glyffuser.diffusion.process import sample

    pipe = GlyffuserPipeline.from_pretrained(tiny_model[0], device="cpu")
    text, mask, empty = pipe.encode(PROMPTS)
    for scheduler in SAMPLERS:
        x = sample(pipe.unet, pipe.scheduler_config, text, mask, empty, [0, 1, 2], 10, 5.0, scheduler)
        assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


def test_same_seed_same_images_and_seeds_differ(tiny_model):
    pipe = GlyffuserPipeline.from_pretrained(tiny_model[0], device="cpu")
    a = pipe(["a kind of fish"], num_images=3, steps=8, seed=5)
    b = pipe(["a kind of fish"], num_images=3, steps=8, seed=5)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))
    # image j of a prompt depends on its seed only, not on the batch it was drawn in
    c = pipe(["a kind of fish"], num_images=1, steps=8, seed=6, scheduler="dpmsolver++")
    assert np.array_equal(np.asarray(c[0]), np.asarray(a[1]))


def test_padded_text_changes_nothing_but_rounding(tiny_model):
    """Padding the prompts to max_length (what a compiled UNet gets) is masked out of attention and pooling."""
    from glyffuser.diffusion.process import sample

    pipe = GlyffuserPipeline.from_pretrained(tiny_model[0], device="cpu")
    text, mask, empty = pipe.encode(PROMPTS)
    args = (pipe.unet, pipe.scheduler_config, text, mask, empty, [0, 1, 2], 8, 3.0)
    trimmed = sample(*args, bf16=False)
    padded = sample(*args, bf16=False, text_length=pipe.info["max_length"])
    assert text.shape[1] < pipe.info["max_length"]
    assert (trimmed - padded).abs().max() < 1e-4  # fp32; measured 6e-6
    # the mask matters: the same padding left unmasked moves the samples
    unmasked = sample(pipe.unet, pipe.scheduler_config, torch.cat([text, text.new_full((3, 20, text.shape[2]), 0.5)], 1),
                      torch.ones(3, text.shape[1] + 20, dtype=torch.bool), empty, [0, 1, 2], 8, 3.0, bf16=False)
    assert (trimmed - unmasked).abs().max() > 0.1


def test_compiled_sampling_draws_the_eager_images(tiny_model):
    """sample.compile: the torch.compile'd (inductor) UNet samples what the eager one does, up to rounding."""
    eager = GlyffuserPipeline.from_pretrained(tiny_model[0], device="cpu", bf16=False)
    compiled = GlyffuserPipeline.from_pretrained(tiny_model[0], device="cpu", bf16=False, compile=True)
    assert compiled.denoiser is not compiled.unet and eager.denoiser is eager.unet
    text, mask, empty = eager.encode(PROMPTS)
    a = eager.sample(text, mask, empty, [0, 1, 2], 8, 3.0)
    b = compiled.sample(text, mask, empty, [0, 1, 2], 8, 3.0)
    assert (a - b).abs().max() < 1e-3, (a - b).abs().max()


def test_encoder_mismatch_is_refused(tiny_model, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model[0], model)
    info = json.loads((model / "glyffuser.json").read_text())
    info["encoder_sha256"] = "f" * 64
    (model / "glyffuser.json").write_text(json.dumps(info))
    with pytest.raises(GlyffuserError, match="trained on embeddings of encoder"):
        GlyffuserPipeline.from_pretrained(model, device="cpu")(["a fish"])


def test_cli_grid_and_prompts_file(tiny_model, tmp_path):
    model = str(tiny_model[0])

    def cli(*args):
        result = subprocess.run([sys.executable, "-m", "glyffuser.cli", "sample", "--params",
                                 str(REPO / "params.yaml"), "--model", model, *args],
                                capture_output=True, text=True, cwd=tmp_path)
        return result

    r = cli("a kind of fish", "-n", "4", "--steps", "5", "--guidance", "5", "--scheduler", "dpmsolver++",
            "--seed", "0", "--out", "fish.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fish.png").stat().st_size > 100

    (tmp_path / "prompts.txt").write_text("a kind of fish\n# a comment\na small bird\n")
    r = cli("--prompts-file", "prompts.txt", "-n", "2", "--steps", "5", "--out", "many")  # --compile: its own test
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "many" / "manifest.json").read_text())
    assert [(m["prompt"], m["seed"]) for m in manifest] == [
        ("a kind of fish", 0), ("a kind of fish", 1), ("a small bird", 0), ("a small bird", 1)]
    assert all((tmp_path / "many" / m["path"].split("/")[-1]).is_file() for m in manifest)

    for bad, text in ((["-n", "0"], "must be 1..256"), (["--steps", "-1"], "at least"), (["--guidance", "-2"], "a number from 0 to 100")):
        r = cli("a fish", *bad)
        assert r.returncode == 1 and r.stderr.startswith("glyffuser: error:") and text in r.stderr

    r = cli("a fish", "--model", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and r.stderr.startswith("glyffuser: error:") and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def tiny_cosine_model(params, rendered, embeddings_path, tmp_path_factory):
    from glyffuser.params import with_overrides
    from glyffuser.stages.train import run_train
    from tests.conftest import TINY_TRAIN, train_paths

    # The schedule alone (contrastive flow off): on this 459-glyph tiny model λ 0.05 put 21 % of the DDIM samples on a
    # grey page (at full size it does not: README, issue 31's paper darkness 9.27 with it against 9.43 without)
    p = with_overrides(params, {**TINY_TRAIN, "train.epochs": 12, "train.lr": 0.003, "train.schedule": "cosine",
                                "train.contrastive_flow": 0.0})
    paths = train_paths(tmp_path_factory.mktemp("cosine"), rendered, embeddings_path)
    run_train(p, paths, track=False)
    return paths.model


@pytest.mark.parametrize("scheduler", SAMPLERS)
def test_cosine_schedule_gives_white_paper(tiny_cosine_model, scheduler):
    """With v-prediction (the default) cosine-schedule samples sit on white paper, like linear ones."""
    pipe = GlyffuserPipeline.from_pretrained(tiny_cosine_model, device="cpu")
    looks_like_glyphs(pipe(PROMPTS, num_images=8, steps=20, guidance=5.0, scheduler=scheduler))


def test_dpmsolver_on_cosine_epsilon_needs_x0_clipping(params, rendered, embeddings_path, tmp_path):
    """The pitfall: with ε-prediction on the cosine schedule, DPM-Solver++ divides by alpha ≈ 0 near
    t = T and diverges into salt-and-pepper noise unless x0 is clipped, as our sampler does."""
    from diffusers import DPMSolverMultistepScheduler

    import glyffuser.diffusion.process as process_module
    from glyffuser.params import with_overrides
    from glyffuser.stages.train import run_train
    from tests.conftest import TINY_TRAIN, train_paths

    p = with_overrides(params, {**TINY_TRAIN, "train.epochs": 12, "train.lr": 0.003, "train.schedule": "cosine",
                                "train.prediction": "epsilon"})
    paths = train_paths(tmp_path, rendered, embeddings_path)
    run_train(p, paths, track=False)
    pipe = GlyffuserPipeline.from_pretrained(paths.model, device="cpu")
    text, mask, empty = pipe.encode(PROMPTS)
    rows = torch.arange(len(PROMPTS)).repeat_interleave(8)
    seeds = list(range(len(rows)))

    ours = process_module.sample(pipe.unet, pipe.scheduler_config, text[rows], mask[rows], empty, seeds, 20, 5.0,
                                  "dpmsolver++")
    assert torch.isfinite(ours).all()
    assert border_stats(ours[:, 0].numpy())[1].mean() < 0.4

    unclipped = DPMSolverMultistepScheduler.from_config(pipe.scheduler_config, algorithm_type="dpmsolver++",
                                                        thresholding=False, timestep_spacing="trailing")
    original = process_module.solver
    process_module.solver = lambda name, config: unclipped
    try:
        raw = process_module.sample(pipe.unet, pipe.scheduler_config, text[rows], mask[rows], empty, seeds, 20,
                                     5.0, "dpmsolver++")
    finally:
        process_module.solver = original
    assert border_stats(raw[:, 0].numpy())[1].mean() > 0.6  # salt and pepper: the guard is what prevents it


def test_the_progressive_sampler_yields_every_step_and_ends_where_sample_does(tiny_model):
    """Issue 43: sample_progressive yields (t, x_t, x̂₀) per step; sample is its last x, bit for bit; x̂₀ is the one
    the step's own guided output implies (what the figures used to spend a second UNet call on)."""
    from glyffuser.diffusion.process import guided_output, initial_noise, x0_from_output

    pipe = GlyffuserPipeline.from_pretrained(tiny_model[0], device="cpu", bf16=False)
    text, mask, empty = pipe.encode(["a kind of fish", "a small bird"])
    for scheduler in ("ddpm", "ddim", "dpmsolver++"):
        run = list(pipe.sample_progressive(text, mask, empty, [0, 1], 4, 3.0, scheduler))
        assert [s.index for s in run] == [0, 1, 2, 3] and run[0].t > run[-1].t
        assert torch.equal(run[0].x_in, initial_noise([0, 1], pipe.resolution))
        assert all(torch.equal(a.x, b.x_in) for a, b in zip(run, run[1:]))
        assert torch.equal(run[-1].x.clamp(-1, 1), pipe.sample(text, mask, empty, [0, 1], 4, 3.0, scheduler))
        for s in (run[0], run[2]):
            out = guided_output(pipe.unet, s.x_in, s.t, text, mask, empty, 3.0)
            expected = x0_from_output(pipe.scheduler_config, s.x_in, s.t, out).clamp(-1, 1)
            assert torch.allclose(s.x0, expected, atol=1e-5), scheduler
