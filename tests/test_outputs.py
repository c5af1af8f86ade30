"""Nothing a user keeps is ever deleted, and every failure is one line found before the work (issue 19).

Each data-loss case uses a real folder with real files; each `glyffuser sample` case points --model at a
folder that does not exist, so a refusal that came after the work would name the model instead."""

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from glyffuser.artifacts.atomic import MARKER, atomic_outputs
from glyffuser.cli import main
from glyffuser.errors import GlyffuserError
from tests.conftest import REPO

NO_MODEL = "/nonexistent/model"


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def one_line(code, err, text, status=1):
    assert code == status, err
    assert err.count("\n") == 0 and err.startswith("glyffuser: error:"), err
    assert text in err, err


def user_folder(root: Path) -> Path:
    docs = root / "mydocs"
    (docs / "sub").mkdir(parents=True)
    (docs / "precious.txt").write_text("years of work")
    (docs / "sub" / "thesis.tex").write_text("\\documentclass{article}")
    return docs


def assert_untouched(docs: Path):
    assert (docs / "precious.txt").read_text() == "years of work"
    assert (docs / "sub" / "thesis.tex").read_text() == "\\documentclass{article}"


# --- glyffuser replaces only what it wrote ------------------------------------------------------------

def test_sources_refuses_a_folder_it_did_not_write_and_replaces_its_own(tmp_path, capsys):
    docs = user_folder(tmp_path)
    one_line(*run(capsys, "sources", "--out", str(docs)), "mydocs is a folder that glyffuser did not write")
    assert_untouched(docs)
    assert sorted(p.name for p in docs.iterdir()) == ["precious.txt", "sub"]
    ours = tmp_path / "ours"
    assert run(capsys, "sources", "--out", str(ours))[0] == 0
    assert (ours / MARKER).is_file()
    (ours / "sources.json").write_text("{}")  # written by us: a second run replaces the folder whole
    assert run(capsys, "sources", "--out", str(ours))[0] == 0
    assert json.loads((ours / "sources.json").read_text())["font_sha256"]


@pytest.mark.parametrize("command", [
    ["figures", "--model", NO_MODEL, "--no-mlflow", "--out"],
    ["train", "--params", str(REPO / "params.yaml"), "--no-mlflow", "--model"],
])
def test_folder_outputs_of_other_commands_are_refused_too(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ here: a refusal after the work started would name a missing input
    docs = user_folder(tmp_path)
    one_line(*run(capsys, *command, str(docs)), "glyffuser did not write")
    assert_untouched(docs)


def test_sample_never_replaces_a_folder_named_like_its_image(tmp_path, capsys):
    album = tmp_path / "album.png"
    album.mkdir()
    (album / "photo1.jpg").write_bytes(b"\xff\xd8\xff a photo")
    one_line(*run(capsys, "sample", "fish", "--model", NO_MODEL, "--out", str(album)),
             "album.png is a folder; glyffuser writes a file there and never replaces a folder")
    assert (album / "photo1.jpg").read_bytes() == b"\xff\xd8\xff a photo"


def test_prompts_file_refuses_before_any_file_changes(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("a kind of fish\n")
    out = tmp_path / "d"
    (out / "manifest.json").mkdir(parents=True)
    (out / "manifest.json" / "mine.txt").write_text("keep")
    one_line(*run(capsys, "sample", "--prompts-file", str(tmp_path / "prompts.txt"), "--model", NO_MODEL,
                  "--out", str(out)), "manifest.json is a folder")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert (out / "manifest.json" / "mine.txt").read_text() == "keep"


def test_a_file_of_another_kind_or_read_only_is_not_replaced(tmp_path, capsys):
    notes = tmp_path / "notes.png"
    notes.write_text("these are my notes, not an image")
    one_line(*run(capsys, "sample", "fish", "--model", NO_MODEL, "--out", str(notes)), "is not a png file")
    assert notes.read_text() == "these are my notes, not an image"
    kept = tmp_path / "existing.png"
    Image.new("L", (4, 4), 0).save(kept)
    kept.chmod(0o444)
    one_line(*run(capsys, "sample", "fish", "--model", NO_MODEL, "--out", str(kept)), "existing.png is read-only")
    assert Image.open(kept).size == (4, 4)


def test_a_parent_that_is_a_file_is_found_before_the_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    one_line(*run(capsys, "sample", "fish", "--model", NO_MODEL, "--out", str(tmp_path / "afile" / "fish.png")),
             "afile is a file, not a folder")


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


ON_READ_ONLY = "mount -t tmpfs tmpfs \"$1\" && { [ -z \"$SEED\" ] || cp \"$SEED\" \"$1\"/; } && mount -o remount,ro \"$1\" && shift && exec \"$@\""


def on_read_only_fs(folder: Path, *argv, seed: Path | None = None, env=None, timeout=120):
    """Run argv with `folder` a read-only file system (a private mount namespace; `seed` copied in first)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "SEED": str(seed or ""), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["unshare", "-rm", "sh", "-c", ON_READ_ONLY, "sh", str(folder), *argv],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.skipif(not _unshare_ok(), reason="needs unshare -rm (user and mount namespaces)")
def test_a_read_only_file_system_is_found_before_the_work(tmp_path):
    ro = tmp_path / "ro"
    result = on_read_only_fs(ro, sys.executable, "-m", "glyffuser", "sample", "fish", "--model", NO_MODEL,
                             "--out", str(ro / "fish.png"))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f"glyffuser: error: cannot write {ro / 'fish.png'}: read-only file system ({ro})"


def test_atomic_outputs_put_everything_back_when_a_rename_fails(tmp_path, monkeypatch):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text('"old a"')
    b.write_text('"old b"')
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(Path(dst))
        if Path(dst) == b and not str(src).endswith(".old"):  # the second new output cannot be put in place
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    with pytest.raises(GlyffuserError, match="could not put .*b.json in place"):
        with atomic_outputs(a, b) as (ta, tb):
            ta.write_text('"new a"')
            tb.write_text('"new b"')
            monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "replace", real_replace)
    assert a.read_text() == '"old a"' and b.read_text() == '"old b"'
    assert b in calls and sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_a_folder_appearing_during_the_work_is_not_replaced(tmp_path):
    out = tmp_path / "out.json"
    with pytest.raises(GlyffuserError, match="is a folder"):
        with atomic_outputs(out) as (tmp,):
            tmp.write_text("{}")
            (out / "sub").mkdir(parents=True)  # a user's folder appears meanwhile
    assert (out / "sub").is_dir()


def test_outputs_are_readable_by_others_as_any_file_the_user_makes(tiny_model):
    umask = os.umask(0)
    os.umask(umask)
    model = tiny_model[0]
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(model.stat().st_mode) == 0o777 & ~umask
    assert (model / MARKER).is_file()


def test_save_pretrained_replaces_only_a_model_folder(tiny_model, tmp_path):
    from glyffuser.diffusion.pipeline import GlyffuserPipeline

    pipe = GlyffuserPipeline.from_pretrained(tiny_model[0], bf16=False)
    docs = user_folder(tmp_path)
    with pytest.raises(GlyffuserError, match="glyffuser did not write"):
        pipe.save_pretrained(docs)
    assert_untouched(docs)
    pipe.save_pretrained(tmp_path / "copy")
    pipe.save_pretrained(tmp_path / "copy")  # its own folder: replaced
    assert GlyffuserPipeline.from_pretrained(tmp_path / "copy").info == pipe.info


# --- bounds on user numbers and prompts -----------------------------------------------------------

@pytest.mark.parametrize("args, text", [
    (["fish", "--seed", "18446744073709551615"], "the seed must be 0..4,294,967,295 with seed + n - 1 <= 4,294,967,295"),
    (["fish", "-n", "100000", "--steps", "1"], "the number of samples per prompt (-n) must be 1..256"),
    (["fish", "-n", "0"], "must be 1..256, got 0"),
    (["fish", "\u200b\u200d\u2060"], "an empty prompt asks for nothing (it holds no visible character)"),
])
def test_bounds_are_enforced_before_the_model_is_loaded(args, text, tmp_path, capsys):
    one_line(*run(capsys, "sample", *args, "--model", NO_MODEL, "--out", str(tmp_path / "x.png")), text)


def test_the_bounds_are_stated_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "1..256 and at most 4,096 glyphs" in out and "0..4,294,967,295" in out


def test_the_pipeline_api_shares_the_bounds(tiny_model):
    from glyffuser.diffusion.pipeline import GlyffuserPipeline

    pipe = GlyffuserPipeline.from_pretrained(tiny_model[0], bf16=False)
    with pytest.raises(GlyffuserError, match="the seed must be"):
        pipe("a kind of fish", seed=2**64 - 1)
    with pytest.raises(GlyffuserError, match="4,096"):
        pipe(["a"] * 17, num_images=256)
    with pytest.raises(GlyffuserError, match="no visible character"):
        pipe("\u200b\x07 ")


# --- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, text", [
    (["sample", "--scheduler", "bogus", "x"], "argument --scheduler: invalid choice: 'bogus'"),
    (["sample", "--seed", "abc", "x"], "argument --seed: invalid int value: 'abc'"),
])
def test_usage_errors_are_one_line_with_exit_2(args, text, tmp_path):
    result = subprocess.run([sys.executable, "-m", "glyffuser", *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("glyffuser: error:") and text in result.stderr


def test_python_dash_m_glyffuser_runs_the_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "glyffuser", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "usage: glyffuser" in result.stdout


# --- a model folder's JSON files are typed ----------------------------------------------------------

@pytest.mark.parametrize("file, key, value", [
    ("glyffuser.json", "max_length", "64"),
    ("glyffuser.json", "max_length", -1),
    ("glyffuser.json", "encoder", 123),
    ("glyffuser.json", "encoder_sha256", None),
    ("scheduler/scheduler_config.json", "num_train_timesteps", "abc"),
    ("scheduler/scheduler_config.json", "beta_schedule", "nope"),  # issue 29: tracebacks deep in diffusers before
    ("unet/config.json", "sample_size", 1e9),
])
def test_wrong_types_in_a_model_folder_are_one_line_naming_file_and_key(file, key, value, tiny_model, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model[0], model)
    data = json.loads((model / file).read_text())
    data[key] = value
    (model / file).write_text(json.dumps(data))
    one_line(*run(capsys, "sample", "fish", "--model", str(model), "--out", str(tmp_path / "x.png")),
             f"{model / file}: {key}:")


# --- tracking cannot hang or break a stage ------------------------------------------------------------

def _guide_argv(figures, evaluated, rendered, out):
    p, fig_paths, root, _ = figures
    _, eval_paths, _, _ = evaluated
    render_out, _ = rendered
    return ["guide", "--figures", str(fig_paths.out), "--umap", str(root / "umap"), "--evaluate", str(eval_paths.out),
            "--train-metrics", str(fig_paths.model.parent / "metrics.json"), "--render-report", str(render_out.report),
            "--classifier", str(eval_paths.classifier), "--model", str(fig_paths.model), "--out", str(out),
            "--upsampler", str(eval_paths.upsampler)]


def test_an_unusable_store_stops_the_stage_before_the_work(figures, evaluated, rendered, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "afile" / "share"))
    out = tmp_path / "guide" / "index.html"
    start = time.perf_counter()
    one_line(*run(capsys, *_guide_argv(figures, evaluated, rendered, out)), "cannot create the MLflow store folder")
    assert time.perf_counter() - start < 10 and not out.exists()


@pytest.mark.skipif(not _unshare_ok(), reason="needs unshare -rm (user and mount namespaces)")
def test_a_read_only_sqlite_store_is_one_line_within_seconds(figures, evaluated, rendered, tmp_path):
    import sqlite3

    db = tmp_path / "seed" / "mlflow.db"
    db.parent.mkdir()
    sqlite3.connect(db).close()
    store = tmp_path / "store"
    out = tmp_path / "guide" / "index.html"
    start = time.perf_counter()
    result = on_read_only_fs(store, sys.executable, "-m", "glyffuser", *_guide_argv(figures, evaluated, rendered, out),
                             seed=db, env={"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"})
    assert time.perf_counter() - start < 60
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "the MLflow store sqlite:///" in result.stderr and "read-only file system" in result.stderr
    assert not out.exists()


def test_a_store_failing_after_the_check_costs_only_the_record(capsys, monkeypatch):
    import socket

    from glyffuser.tracking import log_to_model_run

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    start = time.perf_counter()
    assert log_to_model_run({"mlflow_run_id": "abc"}, {"x": 1.0}, [], "guide") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("glyffuser: warning: not recorded in MLflow")
    assert time.perf_counter() - start < 30


# --- data enters HTML escaped --------------------------------------------------------------------

PAYLOAD = "</script><script>window.pwned=1</script><img src=x onerror=alert(1)>"


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def elements(page: str) -> list[str]:
    parser = _Elements()
    parser.feed(page)
    return parser.tags


def test_the_umap_page_keeps_definitions_and_prompts_as_text(tmp_path):
    from glyffuser.stages.umap import write_html

    png = "iVBORw0KGgo="
    points = {"x": [0.0, 1.0], "y": [0.0, 1.0], "char": ["魚", "<b>"], "cp": [0x9B5A, 0x9B5B], "text": [PAYLOAD, "fish & chips"],
              "radical": [195, 195], "layout": ["single", "single"], "split": ["train", "test"], "png": [png, png]}
    samples = {"x": [0.5], "y": [0.5], "text": [PAYLOAD], "kind": ["grid"], "radical": [195], "png": [png]}
    write_html(tmp_path / "umap.html", points, samples, [195])
    page = (tmp_path / "umap.html").read_text(encoding="utf-8")
    assert elements(page).count("script") == 1 and "img" not in elements(page)
    script = page[page.index("<script>") + 8: page.index("</script>")]
    data = json.loads(script[script.index("const D=") + 8: script.index(";const esc=")])
    assert data["points"]["text"][0] == PAYLOAD and data["samples"]["text"][0] == PAYLOAD  # the text survives as data
    # the tooltip builds its HTML only from escaped fields
    tooltip = script[script.index("tip.innerHTML="): script.index("tip.style.display='block'")]
    for field in ("text", "char", "kind", "layout", "split", "radical"):
        assert tooltip.count(f"S.{field}[bi]") == tooltip.count(f"esc(S.{field}[bi])") > 0, field


def test_the_guide_escapes_what_it_quotes_from_a_model_folder(figures, evaluated, rendered, tmp_path, capsys):
    _, fig_paths, _, _ = figures
    model = tmp_path / "model"
    shutil.copytree(fig_paths.model, model)
    info = json.loads((model / "glyffuser.json").read_text())
    (model / "glyffuser.json").write_text(json.dumps({**info, "encoder": PAYLOAD, "mlflow_run_id": PAYLOAD}))
    shutil.copy(fig_paths.model.parent / "metrics.json", tmp_path / "metrics.json")
    out = tmp_path / "guide" / "index.html"
    argv = _guide_argv(figures, evaluated, rendered, out)
    argv[argv.index("--model") + 1] = str(model)
    argv[argv.index("--train-metrics") + 1] = str(tmp_path / "metrics.json")
    assert run(capsys, *argv, "--no-mlflow")[0] == 0
    page = out.read_text(encoding="utf-8")
    assert "script" not in elements(page) and "window.pwned" in page and PAYLOAD not in page


def test_mlflow_run_names_say_what_was_trained_or_which_dvc_experiment(monkeypatch):
    from glyffuser.tracking import run_name

    params = {"train": {"resolution": 64, "patch_size": 2, "block_channels": [16, 32, 64], "epochs": 4}}
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert run_name("train", params, "a690009deadbeef") == "train · 64 px in 2×2 patches, UNet 16-32-64, 4 ep · a690009"
    monkeypatch.setenv("DVC_EXP_NAME", "smoke")  # what `dvc exp run -n smoke` (and `glyffuser profile smoke`) sets
    assert run_name("train", params, "a690009deadbeef") == "train · smoke"
