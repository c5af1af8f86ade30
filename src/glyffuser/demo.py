"""`glyffuser demo`: a local web playground on a trained model (Gradio, on 127.0.0.1).

Type a definition, watch the glyphs being denoised step by step (the diffusion model's drafts; with the
cascade's upsampler the finished glyphs come out at twice that side), then read what the evaluate stage's
classifier sees in each (its top radicals), the nearest training glyphs with their definitions (new
glyph or near-copy?), and where the samples land on the umap stage's map. Everything runs locally on
the model's own text encoder; nothing is fetched from the network. Only this command imports Gradio.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from glyffuser.artifacts.glyph_tables import read_glyph_tables
from glyffuser.artifacts.images import pngs_to_tensor, radical_label, tensor_to_images
from glyffuser.artifacts.tables import read_table
from glyffuser.command import inputs, run_command
from glyffuser.diffusion.pipeline import GlyffuserPipeline, choose_upsampler
from glyffuser.diffusion.process import check_sampling
from glyffuser.errors import GlyffuserError
from glyffuser.limits import MAX_SEED, check_request, clean_prompt
from glyffuser.params import Params
from glyffuser.reports import EvaluateMetrics, read_report

MAX_GLYPHS = 16
SHOWN_PX = 192  # glyphs are upscaled (nearest neighbour) to this side in the page
# Prompts with no radical to draw (abstract, or modern): shown as examples so that users see failure too.
# (The grid's own "a kind of insect" and "an illness" fail as well: 0 of 8 in the evaluate stage.)
HARD_PROMPTS = ["happiness; joy", "a computer", "the sound of rain"]


@dataclass(frozen=True)
class DemoPaths:
    model: Path
    classifier: Path
    definitions: Path
    glyphs: Path
    umap_points: Path
    evaluate_metrics: Path
    encoder: Path | None = None  # the encoder bundled with an MLflow model (--model models:/...)
    upsampler: Path | bool | None = None  # GlyffuserPipeline.from_pretrained's choice (pipeline.choose_upsampler)


class Playground:
    """The model, its judge and the data it is compared with; `generate` is what the page runs."""

    def __init__(self, params: Params, paths: DemoPaths):
        from glyffuser.analysis.judge import load_classifier

        self.steps_made = 0  # denoising steps made for the page so far (tests check a cancelled job makes no more)

        s = params.sample
        self.params = params
        self.pipe = GlyffuserPipeline.from_pretrained(paths.model, bf16=s.autocast(), encoder=paths.encoder,
                                                      upsampler=paths.upsampler)
        self.net, _ = load_classifier(paths.classifier)
        defs, glyphs = read_glyph_tables(paths.definitions, paths.glyphs, ("character", "definition", "split"))
        train = np.flatnonzero(np.array(defs.column("split").to_pylist()) == "train")
        train_defs = defs.take(train)
        self.chars = train_defs.column("character").to_pylist()
        self.definitions = train_defs.column("definition").to_pylist()
        pngs = glyphs.column("png").take(train).to_pylist()
        self.train = pngs_to_tensor(pngs, self.pipe.resolution)  # (N, 1, R, R): the novelty reference
        self.map_pixels = pngs_to_tensor(pngs, 16).flatten(1)  # (N, 256): places samples on the map
        points, _ = read_table(paths.umap_points, required=("codepoint", "x", "y"))
        xy = {cp: (x, y) for cp, x, y in zip(points.column("codepoint").to_pylist(), points.column("x").to_pylist(),
                                             points.column("y").to_pylist())}
        self.all_xy = np.array(list(xy.values()))
        self.train_xy = np.array([xy[cp] for cp in train_defs.column("codepoint").to_pylist()])
        # no evaluate run: distances are shown without a verdict (a damaged report is an error, as everywhere)
        self.copy_threshold = (read_report(EvaluateMetrics, paths.evaluate_metrics).copy_threshold
                               if paths.evaluate_metrics.is_file() else None)

    # -- checks -------------------------------------------------------------------------------------
    def check_prompt(self, prompt: str) -> str:
        if not (prompt or "").strip():
            raise GlyffuserError("type a definition first, e.g. “a kind of fish”")
        prompt = clean_prompt(prompt)  # at most limits.MAX_PROMPT_CHARS, as everywhere
        (n,), most = self.pipe.encoder.count_tokens([prompt]), self.pipe.info["max_length"]
        if n > most:
            raise GlyffuserError(f"the prompt has {n} tokens; the model reads at most {most}")
        return prompt

    # -- what the page shows ------------------------------------------------------------------------
    def frames(self, prompt: str, count: int, steps: int, guidance: float, seed: int, sampler: str):
        """Yield (step, images) while sampling: the noisy x_t after each step, then ("done", the final glyphs), which
        the cascade's upsampler (if the pipeline has one) has taken to its output side.

        The pipeline's progressive sampler is a generator: a step is made only when the page takes the previous
        frame, so a cancelled job (whose frames nobody takes any more) stops with the step in hand, and closing
        these frames (Gradio does when a job is cancelled, or the page goes away) ends its sampling."""
        check_request(1, count, seed, steps)
        check_sampling(steps, guidance, self.pipe.scheduler_config)
        text, mask, empty = self.pipe.encode([prompt])
        rows = torch.zeros(count, dtype=torch.long)
        seeds = [seed + j for j in range(count)]
        run = self.pipe.sample_progressive(text[rows], mask[rows], empty, seeds, steps, guidance, sampler)
        x = None
        try:
            for step in run:
                self.steps_made += 1
                x = step.x.float().cpu()
                yield step.index + 1, x
            yield "done", self.pipe.upscale(x.clamp(-1, 1))
        finally:
            run.close()

    def readings(self, x: torch.Tensor, top: int = 3, neighbours: int = 3) -> list[dict]:
        """Per glyph: the classifier's top radicals and the nearest training glyphs (RMS distance, ±1 px shift)."""
        from glyffuser.analysis.metrics import nearest_k

        with torch.inference_mode():
            logits = self.net(torch.nn.functional.interpolate(x, size=self.net.resolution, mode="area")
                              if x.shape[-1] != self.net.resolution else x)
        probs = logits.softmax(dim=1)
        side = self.train.shape[-1]  # the training glyphs at the model's side (a cascade's glyphs are twice that)
        small = torch.nn.functional.interpolate(x, size=side, mode="area") if x.shape[-1] != side else x
        all_dists, all_idx = nearest_k(small, self.train, neighbours)
        result = []
        for i in range(len(x)):
            p, r = probs[i].topk(top)
            dists, idx = all_dists[i], all_idx[i]
            novel = None if self.copy_threshold is None else bool(dists[0] > self.copy_threshold)
            result.append({
                "radicals": [{"radical": int(k) + 1, "name": radical_label(int(k) + 1), "p": round(float(v), 3)}
                             for v, k in zip(p, r)],
                "neighbours": [{"character": self.chars[j], "definition": self.definitions[j],
                                "distance": round(float(d), 4)} for d, j in zip(dists, idx)],
                "novel": novel,
            })
        return result

    def map_position(self, x: torch.Tensor, k: int = 5) -> np.ndarray:
        """Each sample at the mean map position of its k nearest training glyphs (pixels at 16 px): (N, 2)."""
        small = torch.nn.functional.interpolate(x.float(), size=16, mode="area").flatten(1)
        idx = torch.cdist(small, self.map_pixels).topk(k, largest=False).indices.numpy()
        return self.train_xy[idx].mean(axis=1)


def _upscale(images: list[Image.Image]) -> list[Image.Image]:
    return [im.resize((SHOWN_PX, SHOWN_PX), Image.NEAREST) for im in images]


def _sheet(images: list[Image.Image], columns: int = 4, cell: int = 128, gap: int = 4) -> Image.Image:
    """All glyphs of one denoising step in one image: the live view sends one file per step, not one per glyph
    (Gradio's per-file cost made a 16-glyph gallery per step 4x slower than sampling itself)."""
    rows = -(-len(images) // columns)
    cols = min(columns, len(images))
    sheet = Image.new("L", (cols * (cell + gap) + gap, rows * (cell + gap) + gap), 200)
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        sheet.paste(im.resize((cell, cell), Image.NEAREST), (gap + c * (cell + gap), gap + r * (cell + gap)))
    return sheet


def _map_image(all_xy: np.ndarray, samples: np.ndarray) -> Image.Image:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.3), dpi=100)
    ax.scatter(*all_xy.T, s=0.5, c="#bbbbbb", lw=0)
    ax.scatter(*samples.T, s=90, c="crimson", marker="*", edgecolors="k", linewidths=0.5)
    for i, (x, y) in enumerate(samples):
        ax.annotate(str(i + 1), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title("your glyphs (★) on the map of all glyphs", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return Image.open(buf)


def _readings_html(readings: list[dict], threshold: float | None) -> str:
    import html

    rows = []
    for i, r in enumerate(readings, 1):
        radicals = ", ".join(f"<b style='font-size:1.3em'>{html.escape(x['name'].split()[0])}</b> {x['p']:.0%}"
                             for x in r["radicals"])
        near = "<br>".join(f"<b style='font-size:1.3em'>{html.escape(n['character'])}</b> "
                           f"{html.escape(n['definition'][:50])} <small>({n['distance']:.3f})</small>"
                           for n in r["neighbours"])
        verdict = "" if r["novel"] is None else ("new glyph" if r["novel"] else "<b>near-copy</b>")
        rows.append(f"<tr><td>{i}</td><td>{radicals}</td><td>{near}</td><td>{verdict}</td></tr>")
    note = (f"Distance: RMS pixel difference to the nearest training glyph (±1 px shift); below the copy threshold "
            f"{threshold:.3f} (evaluate stage) a glyph counts as a near-copy." if threshold is not None else
            "Distance: RMS pixel difference to the nearest training glyph (±1 px shift).")
    return ("<table><tr><th>#</th><th>classifier: top radicals</th><th>nearest training glyphs (distance)</th>"
            f"<th></th></tr>{''.join(rows)}</table><p><small>{note}</small></p>")


def model_size(pipe: GlyffuserPipeline) -> str:
    if pipe.upsampler is None:
        return f"{pipe.resolution} px"
    return f"{pipe.resolution} px drafts, upsampled to {pipe.output_resolution} px (the cascade)"


def build_app(playground: Playground):
    import gradio as gr

    s = playground.params.sample
    examples = [[p] for p in dict.fromkeys(list(s.prompts) + HARD_PROMPTS)]

    def generate(prompt, count, steps, guidance, seed, sampler):
        try:
            prompt = playground.check_prompt(prompt)
            try:
                count, steps, seed = int(count), int(steps), int(seed)
            except (TypeError, ValueError, OverflowError):
                raise GlyffuserError("glyphs, steps and seed must be whole numbers") from None
            if not 1 <= count <= MAX_GLYPHS:
                raise GlyffuserError(f"number of glyphs must be 1..{MAX_GLYPHS}")
            for step, x in playground.frames(prompt, count, steps, float(guidance), seed, sampler):
                if step != "done":
                    yield (_sheet(tensor_to_images(x)), gr.skip(), f"step {step} of {steps}", gr.skip(), gr.skip(),
                           gr.skip())
                    continue
                readings = playground.readings(x)
                where = playground.map_position(x)
                result = {"prompt": prompt, "side_px": int(x.shape[-1]), "readings": readings,
                          "map_xy": where.round(3).tolist()}
                glyphs = tensor_to_images(x)
                yield (_sheet(glyphs), _upscale(glyphs), f"done: {count} glyph{'s' * (count > 1)}, {steps} steps",
                       _readings_html(readings, playground.copy_threshold), _map_image(playground.all_xy, where),
                       result)
        except GlyffuserError as err:
            raise gr.Error(str(err), print_exception=False) from None

    theme = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts: offline
    with gr.Blocks(title="glyffuser playground") as app:
        gr.Markdown("## glyffuser playground\nType an English definition; the model invents a Chinese glyph for it. "
                    f"Model: {model_size(playground.pipe)}, encoder {playground.pipe.info['encoder']}.")
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="definition", value=s.prompts[0], max_lines=2)
                with gr.Row():
                    count = gr.Slider(1, MAX_GLYPHS, value=4, step=1, label="glyphs")
                    steps = gr.Slider(1, 100, value=s.steps, step=1, label="steps")
                with gr.Row():
                    guidance = gr.Slider(0, 20, value=s.guidance, step=0.5, label="guidance")
                    seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED - MAX_GLYPHS + 1, label="seed")
                    sampler = gr.Dropdown(["dpmsolver++", "ddim", "ddpm"], value=s.scheduler, label="sampler")
                button = gr.Button("Generate", variant="primary")
                gr.Examples(examples, inputs=[prompt], label=f"examples (the last {len(HARD_PROMPTS)} ask for what no radical draws)")
            with gr.Column(scale=3):
                status = gr.Markdown()
                live = gr.Image(label="denoising, step by step", show_label=True, height=240)
                gallery = gr.Gallery(label=f"the glyphs ({playground.pipe.output_resolution} px, enlarged; numbered as in the "
                                     "readings)", columns=8, rows=2, height=260, object_fit="contain")
        with gr.Row():
            readings = gr.HTML()
            where = gr.Image(label="map", show_label=False, height=330)
        with gr.Accordion("raw result (JSON)", open=False):
            raw = gr.JSON()
        inputs = [prompt, count, steps, guidance, seed, sampler]
        outputs = [live, gallery, status, readings, where, raw]
        button.click(generate, inputs, outputs, api_name="generate")
        prompt.submit(generate, inputs, outputs, api_name=False)
        app.load(generate, inputs, outputs, api_name=False)  # the page opens on a glyph being invented
    return app, theme


def serve(params: Params, paths: DemoPaths, port: int, block: bool = True):
    """Start the app on 127.0.0.1:port (0: a free port); returns (app, url) when not blocking (app.playground: the
    Playground it serves)."""
    import socket

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: works offline
    with socket.socket() as sock:  # the port is checked before the model is loaded (0: take a free one)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            raise GlyffuserError(f"port {port} on 127.0.0.1 is not free ({(err.strerror or str(err)).lower()}): "
                                 "stop what uses it, or pass --port 0 for any free port") from None
        port = sock.getsockname()[1]
    playground = Playground(params, paths)
    app, theme = build_app(playground)
    app.playground = playground
    print(f"glyffuser demo: http://127.0.0.1:{port}  (Ctrl+C stops it)", flush=True)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=not block, show_error=False,
               inbrowser=False, quiet=True, theme=theme)
    return app, f"http://127.0.0.1:{port}"


# `glyffuser demo`
def add_arguments(p) -> None:
    inputs(p, "model", "classifier", "definitions", "glyphs")
    p.set_defaults(encoder=None)  # the encoder bundled with an MLflow --model, set when the CLI resolves the URI
    p.add_argument("--umap", type=Path, default=Path("data/umap/points.parquet"), help="the map samples are placed on")
    p.add_argument("--evaluate", type=Path, default=Path("data/evaluate/metrics.json"), help="its copy threshold")
    p.add_argument("--upsampler", type=Path,
                   help="upsampler folder (default: the model folder's own upsampler/, else data/upsampler when the "
                        "upsampler stage has run)")
    p.add_argument("--base", action="store_true", help="show the diffusion model's drafts, not upsampled")
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default: %(default)s; 0: a free one)")


def command(args) -> None:
    from glyffuser.params import load_params

    paths = DemoPaths(args.model, args.classifier, args.definitions, args.glyphs, args.umap, args.evaluate, args.encoder,
                      choose_upsampler(args.model, args.upsampler, args.base))
    serve(load_params(args.params), paths, args.port)


def main(argv: list[str] | None = None, before=None) -> int:
    return run_command("demo", __doc__.splitlines()[0], add_arguments, command, argv, before)
