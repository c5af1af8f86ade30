"""`glyffuser demo` on the tiny model, driven through Gradio's client API on a free local port."""

import subprocess
import sys

import pytest

from glyffuser.cli import main
from glyffuser.deps import command_modules


@pytest.fixture(scope="module")
def demo(figures, evaluated, rendered):
    from gradio_client import Client

    from glyffuser.demo import DemoPaths, serve

    p, fig_paths, root, _ = figures
    _, eval_paths, _, _ = evaluated
    out, _ = rendered
    paths = DemoPaths(fig_paths.model, eval_paths.classifier, out.definitions, out.glyphs,
                      root / "umap" / "points.parquet", eval_paths.metrics, upsampler=eval_paths.upsampler)
    app, url = serve(p, paths, 0, block=False)
    yield p, Client(url, verbose=False), app.playground
    app.close()


def test_generate_streams_frames_then_glyphs_readings_and_neighbours(demo):
    from PIL import Image

    from glyffuser.demo import SHOWN_PX

    p, client, _ = demo
    steps = 4
    job = client.submit("a kind of fish", 2, steps, 3.0, 0, "dpmsolver++", api_name="/generate")
    live, gallery, status, html, where, raw = job.result(timeout=120)
    # one update per denoising step (live frames), then the final glyphs with their readings
    assert len(job.outputs()) == steps + 1
    assert status.startswith("done") and len(gallery) == 2
    assert Image.open(gallery[0]["image"]).size == (SHOWN_PX, SHOWN_PX)
    assert Image.open(live).size[0] > 2 * 128  # the last frame: both glyphs side by side
    readings = raw["readings"]
    assert len(readings) == 2 and len(raw["map_xy"]) == 2
    assert raw["side_px"] == 32  # the cascade: 16 px drafts on the live view, the upsampler's 32 px glyphs at the end
    for r in readings:
        assert len(r["radicals"]) == 3 and 1 <= r["radicals"][0]["radical"] <= 214
        assert sum(x["p"] for x in r["radicals"]) <= 1.0001
        assert r["radicals"][0]["name"][0] == chr(0x2F00 + r["radicals"][0]["radical"] - 1)  # the radical itself
        distances = [n["distance"] for n in r["neighbours"]]
        assert len(distances) == 3 and distances == sorted(distances) and r["neighbours"][0]["definition"]
        assert isinstance(r["novel"], bool)
    assert "nearest training glyphs" in html and where is not None
    # the same seed gives the same glyphs
    again = client.predict("a kind of fish", 2, steps, 3.0, 0, "dpmsolver++", api_name="/generate")[5]
    assert again["readings"] == readings


@pytest.mark.parametrize("prompt, message", [("   ", "type a definition"), ("fish " * 60, "keep it to 200")])
def test_bad_prompts_get_a_message_not_a_stack_trace(demo, prompt, message):
    from gradio_client.exceptions import AppError

    _, client, _ = demo
    with pytest.raises(AppError, match=message) as err:
        client.predict(prompt, 2, 3, 3.0, 0, "dpmsolver++", api_name="/generate")
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value).strip()


def test_a_folder_that_is_not_a_model_is_refused_in_one_line(tmp_path, capsys):
    assert main(["demo", "--model", str(tmp_path), "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a glyffuser model folder" in err


def test_the_pipeline_never_imports_gradio():
    stages = ("sources", "render", "embed", "train", "sample", "classifier", "draw", "evaluate", "umap", "figures", "guide")
    assert not any("glyffuser.demo" in command_modules(s) for s in stages)
    code = "import sys, glyffuser.cli, glyffuser.diffusion.pipeline, glyffuser.stages.guide; assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cancelling_a_job_stops_its_sampling(demo):
    import time

    p, client, playground = demo
    job = client.submit("a kind of fish", 16, 100, 3.0, 0, "dpmsolver++", api_name="/generate")
    deadline = time.time() + 60
    while not job.outputs() and time.time() < deadline:
        time.sleep(0.05)
    assert job.outputs()  # it is sampling now
    job.cancel()
    time.sleep(1.0)  # the step in hand finishes
    made = playground.steps_made
    time.sleep(1.5)
    assert playground.steps_made == made, "the cancelled job is still sampling"
    assert made < 100
    # the next job runs alone and finishes
    assert client.predict("a kind of fish", 1, 2, 3.0, 0, "dpmsolver++", api_name="/generate")[2].startswith("done")
    assert playground.steps_made == made + 2


def test_closing_the_frames_of_a_job_stops_its_sampling(figures, evaluated, rendered):
    from glyffuser.demo import DemoPaths, Playground

    p, fig_paths, root, _ = figures
    _, eval_paths, _, _ = evaluated
    out, _ = rendered
    playground = Playground(p, DemoPaths(fig_paths.model, eval_paths.classifier, out.definitions, out.glyphs,
                                         root / "umap" / "points.parquet", eval_paths.metrics))
    frames = playground.frames("a kind of fish", 16, 1000, 3.0, 0, "ddpm")  # 1000 steps: many seconds of work
    assert next(frames)[0] == 1
    frames.close()  # what Gradio does to a cancelled job
    assert playground.steps_made == 1  # stopped with the step in hand, not after 1000
    with pytest.raises(StopIteration):
        next(frames)
