"""`glyffuser <command>`: the one entry point of the pipeline; DVC stages call it (see dvc.yaml).

Each pipeline command reads params.yaml (or --params), writes its outputs atomically and prints a
short JSON summary. Failures caused by input print one line `glyffuser: error: ...` and exit 1; a bad
command line (unknown option, `--seed abc`) prints one such line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from glyffuser.errors import GlyffuserError
from glyffuser.params import DEFAULT_PARAMS, load_params


def _cmd_sources(args: argparse.Namespace) -> dict:
    from dataclasses import asdict

    from glyffuser.stages.sources import collect_sources

    return asdict(collect_sources(load_params(args.params).sources, args.out))


def _cmd_render(args: argparse.Namespace) -> dict:
    from glyffuser.stages.render import RenderOutputs, run_render

    return run_render(load_params(args.params), args.sources, RenderOutputs.under(args.out))


def _cmd_embed(args: argparse.Namespace) -> dict:
    from glyffuser.stages.embed import run_embed

    return run_embed(load_params(args.params).embed, args.definitions, args.out)


def _train_paths(args: argparse.Namespace):
    from glyffuser.stages.train import TrainPaths

    return TrainPaths(args.definitions, args.glyphs, args.embeddings, args.model, args.metrics, args.curve, args.checkpoints)


def _cmd_train(args: argparse.Namespace) -> dict:
    from glyffuser.stages.train import run_train

    return run_train(load_params(args.params), _train_paths(args), track=not args.no_mlflow)


def _default(value, default):
    return default if value is None else value


def _cmd_sample(args: argparse.Namespace) -> dict:
    from glyffuser.diffusion.pipeline import GlyffuserPipeline
    from glyffuser.diffusion.process import check_sampling
    from glyffuser.limits import check_request, clean_prompt
    from glyffuser.params import check_guidance
    from glyffuser.stages.sample import files_outputs, grid_outputs, read_prompts, sample_files, sample_grid

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
    s = load_params(args.params).sample
    steps = s.steps if args.steps is None else args.steps
    guidance = s.guidance if args.guidance is None else args.guidance
    scheduler = args.scheduler or s.scheduler
    compile = s.compile if args.compile is None else args.compile
    # Every bound and every output path is checked before the model is even loaded.
    if args.prompts_file:
        prompts, n, out = read_prompts(args.prompts_file), _default(args.n, 1), args.out or Path("samples")
    elif prompts:
        n, out, manifest = _default(args.n, 4), args.out or Path("samples.png"), None
    else:  # no prompts: the pipeline's fixed grid from params (the DVC `sample` stage)
        prompts, n, out = s.prompts, _default(args.n, s.seeds), args.out or Path("data/sample/grid.png")
        manifest = out.with_name("manifest.json")
    check_request(len(prompts), n, args.seed)
    if args.prompts_file:
        files_outputs(out, len(prompts), n, args.seed)
    else:
        grid_outputs(out, manifest)
    pipe = GlyffuserPipeline.from_pretrained(args.model, bf16=s.autocast(), compile=compile, encoder=args.encoder)
    check_sampling(steps, guidance, pipe.scheduler_config)
    if args.prompts_file:
        return sample_files(pipe, prompts, n, steps, guidance, scheduler, args.seed, out)
    return sample_grid(pipe, prompts, n, steps, guidance, scheduler, args.seed, out, manifest)


def _cmd_classifier(args: argparse.Namespace) -> dict:
    from glyffuser.stages.classifier import run_classifier

    return run_classifier(load_params(args.params), args.definitions, args.glyphs, args.out)


def _cmd_evaluate(args: argparse.Namespace) -> dict:
    from glyffuser.stages.evaluate import EvaluatePaths, run_evaluate

    paths = EvaluatePaths(args.model, args.classifier, args.definitions, args.glyphs, args.embeddings, args.out)
    return run_evaluate(load_params(args.params), paths, track=not args.no_mlflow)


def _cmd_umap(args: argparse.Namespace) -> dict:
    from glyffuser.stages.umap import run_umap

    return run_umap(load_params(args.params), args.definitions, args.glyphs, args.sources, args.samples,
                    args.out, track=not args.no_mlflow, model=args.model)


def _cmd_figures(args: argparse.Namespace) -> dict:
    from glyffuser.artifacts.atomic import check_output
    from glyffuser.artifacts.source_manifest import SourceManifest
    from glyffuser.stages.figures import FigurePaths, run_figures

    check_output(args.out, folder=True)  # before reading anything
    font = args.sources / SourceManifest.read(args.sources).font_file
    paths = FigurePaths(args.model, args.definitions, args.glyphs, args.umap, args.out, args.classifier,
                        args.embeddings, args.samples, font)
    return run_figures(load_params(args.params), paths, track=not args.no_mlflow)


def _cmd_guide(args: argparse.Namespace) -> dict:
    from glyffuser.stages.guide import GuidePaths, run_guide

    paths = GuidePaths(args.figures, args.umap, args.evaluate, args.train_metrics, args.render_report,
                       args.classifier / "report.json", args.model, args.out)
    return run_guide(load_params(args.params), paths, track=not args.no_mlflow)


def _cmd_demo(args: argparse.Namespace) -> None:
    from glyffuser.demo import DemoPaths, serve  # Gradio: imported by this command only, never by the stages

    paths = DemoPaths(args.model, args.classifier, args.definitions, args.glyphs, args.umap, args.evaluate, args.encoder)
    serve(load_params(args.params), paths, args.port)


def _cmd_profile(args: argparse.Namespace) -> dict | None:
    from glyffuser.profiles import run_profile

    # argparse hands everything after NAME over as is: --print there is ours, the rest after -- is dvc's
    ours, dvc_args = args.dvc_args, []
    if "--" in ours:
        ours, dvc_args = ours[: ours.index("--")], ours[ours.index("--") + 1:]
    if unknown := [a for a in ours if a != "--print"]:
        raise GlyffuserError(f"unknown arguments {' '.join(unknown)}: put dvc exp run's own after --")
    return run_profile(args.name, args.params, dvc_args, print_only=args.print or "--print" in ours)


# Where each stage's inputs live by default: the paths dvc.yaml wires together.
PIPELINE_FILES = {
    "sources": "data/sources",
    "definitions": "data/render/definitions.parquet",
    "glyphs": "data/render/glyphs.parquet",
    "embeddings": "data/embed/embeddings.parquet",
    "model": "data/model",
    "classifier": "data/classifier",
}


class _Parser(argparse.ArgumentParser):
    """A bad command line is one line too (exit 2, as for every usage error), not argparse's usage block."""

    def error(self, message: str):
        self.exit(2, f"glyffuser: error: {message} (see: {self.prog} --help)\n")


def _sample_options(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--model", default=Path("data/model"),
                   help="model folder, or an MLflow model URI: models:/glyffuser/VERSION, runs:/RUN_ID/model "
                        "(default: %(default)s)")
    p.add_argument("--out", type=Path, help="grid PNG, or the folder with --prompts-file; glyffuser replaces only "
                                            "files of the kind it writes, never a folder or a read-only file")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="glyffuser", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameters file (default: %(default)s)")
        p.set_defaults(func=func, encoder=None)  # encoder: the one bundled with an MLflow --model (sample, demo)
        return p

    def inputs(p: argparse.ArgumentParser, *names: str) -> None:
        for name in names:
            p.add_argument(f"--{name}", type=Path, default=Path(PIPELINE_FILES[name]))

    p = command("sources", _cmd_sources, "copy the font and Unihan files into the repository")
    p.add_argument("--out", type=Path, default=Path("data/sources"))

    p = command("render", _cmd_render, "render glyphs and build the definitions and glyphs tables")
    inputs(p, "sources")
    p.add_argument("--out", type=Path, default=Path("data/render"))

    p = command("embed", _cmd_embed, "encode every definition with the text encoder into Parquet")
    inputs(p, "definitions")
    p.add_argument("--out", type=Path, default=Path("data/embed/embeddings.parquet"))

    p = command("train", _cmd_train, "train the diffusion model (resumes from a matching checkpoint)")
    inputs(p, "definitions", "glyphs", "embeddings", "model")
    p.add_argument("--metrics", type=Path, default=Path("data/train/metrics.json"))
    p.add_argument("--curve", type=Path, default=Path("data/train/loss.csv"))
    p.add_argument("--checkpoints", type=Path, default=Path("data/train/checkpoints"))
    p.add_argument("--no-mlflow", action="store_true", help="do not record the run in MLflow")

    _sample_options(command("sample", _cmd_sample, "generate glyphs from English prompts with a trained model"))

    p = command("classifier", _cmd_classifier, "train the radical classifier that judges generated glyphs")
    inputs(p, "definitions", "glyphs")
    p.add_argument("--out", type=Path, default=Path("data/classifier"))

    p = command("evaluate", _cmd_evaluate, "measure prompt adherence, controls, KID/FID and novelty of a model")
    inputs(p, "model", "classifier", "definitions", "glyphs", "embeddings")
    p.add_argument("--out", type=Path, default=Path("data/evaluate"))
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")

    p = command("umap", _cmd_umap, "UMAP map of the glyph dataset with density, radicals, layouts and samples")
    inputs(p, "definitions", "glyphs")
    p.add_argument("--sources", type=Path, default=Path("data/sources"), help="font and decomposition table")
    p.add_argument("--samples", type=Path, default=Path("data/evaluate/samples.parquet"))
    p.add_argument("--model", type=Path, default=Path("data/model"), help="its MLflow run receives the figures")
    p.add_argument("--out", type=Path, default=Path("data/umap"))
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")

    p = command("figures", _cmd_figures, "the visual guide's figures from the trained model")
    inputs(p, "model", "definitions", "glyphs", "classifier", "embeddings", "sources")
    p.add_argument("--umap", type=Path, default=Path("data/umap/points.parquet"))
    p.add_argument("--samples", type=Path, default=Path("data/evaluate/samples.parquet"))
    p.add_argument("--out", type=Path, default=Path("data/figures"))
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")

    p = command("guide", _cmd_guide, "the visual guide: one HTML page from this run's figures and numbers")
    inputs(p, "model", "classifier")
    p.add_argument("--figures", type=Path, default=Path("data/figures"))
    p.add_argument("--umap", type=Path, default=Path("data/umap"))
    p.add_argument("--evaluate", type=Path, default=Path("data/evaluate"))
    p.add_argument("--train-metrics", type=Path, default=Path("data/train/metrics.json"))
    p.add_argument("--render-report", type=Path, default=Path("data/render/report.json"))
    p.add_argument("--out", type=Path, default=Path("data/guide/index.html"))
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")

    p = command("demo", _cmd_demo, "a local web playground on the trained model (Gradio, on 127.0.0.1)")
    inputs(p, "model", "classifier", "definitions", "glyphs")
    p.set_defaults(model=Path("data/model"))  # also an MLflow model URI: models:/glyffuser/VERSION, runs:/RUN_ID/model
    p.add_argument("--umap", type=Path, default=Path("data/umap/points.parquet"), help="the map samples are placed on")
    p.add_argument("--evaluate", type=Path, default=Path("data/evaluate/metrics.json"), help="its copy threshold")
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default: %(default)s; 0: a free one)")
    p = command("profile", _cmd_profile, "run a profile (profiles/NAME.yaml: the keys that differ from params.yaml) "
                "as a DVC experiment: dvc exp run -n NAME -S key=value ...")
    p.add_argument("name", help="smoke, gpu, or a path to a .yaml file of overrides")
    p.add_argument("--print", action="store_true", help="print the dvc exp run command instead of running it")
    p.add_argument("dvc_args", nargs=argparse.REMAINDER, help="more `dvc exp run` arguments, after -- (e.g. -- -f --temp)")
    return parser


def _resolve_model_uri(args: argparse.Namespace) -> None:
    """`--model models:/NAME/VERSION` or `runs:/RUN_ID/model` (sample, demo): the MLflow model's folder and encoder.
    Resolved here, before the command, so a DVC stage (always a model folder) never runs the MLflow code."""
    if args.command in ("sample", "demo") and str(args.model).startswith(("models:/", "runs:/")):
        from glyffuser.artifacts.mlflow_model import resolve_model_uri

        args.model, args.encoder = resolve_model_uri(str(args.model))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _resolve_model_uri(args)
        summary = args.func(args)
    except GlyffuserError as err:
        print(f"glyffuser: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("glyffuser: interrupted", file=sys.stderr)
        return 130
    if summary is not None:
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
