"""Bad input through the real CLI: one line on stderr, exit 1, nothing left behind."""

import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import REPO


def glyffuser(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "glyffuser.cli", *args], cwd=cwd, capture_output=True, text=True, env=env)


def assert_one_line_error(result, text):
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glyffuser: error:"), result.stderr
    assert text in lines[0]


def write_params(tmp_path, *replacements):
    from glyffuser.profiles import write_profile_params

    text = write_profile_params("smoke", tmp_path / "params.yaml", REPO / "params.yaml", REPO).read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "params.yaml").write_text(text)


def test_invalid_parameter(tmp_path):
    write_params(tmp_path, ("image_size: 128", "image_size: -3"))
    assert_one_line_error(glyffuser("render", cwd=tmp_path), "params.yaml: render.image_size")


def test_non_font_file(tmp_path):
    (tmp_path / "font.ttf").write_text("not a font")
    write_params(tmp_path, ("font: Noto Sans SC", f"font: {tmp_path / 'font.ttf'}"))
    assert_one_line_error(glyffuser("sources", cwd=tmp_path), "not a usable OpenType/TrueType font")
    assert not (tmp_path / "data" / "sources").exists()


def test_malformed_unihan_line(tmp_path, sources_dir):
    write_params(tmp_path)
    shutil.copytree(sources_dir, tmp_path / "data" / "sources")
    readings = tmp_path / "data" / "sources" / "Unihan_Readings.txt"
    readings.write_text(readings.read_text(encoding="utf-8") + "U+9B5A kDefinition no tabs\n", encoding="utf-8")
    result = glyffuser("render", cwd=tmp_path)
    assert_one_line_error(result, "Unihan_Readings.txt:")
    assert "malformed Unihan line" in result.stderr
    assert not (tmp_path / "data" / "render").exists() or not any((tmp_path / "data" / "render").iterdir())


def test_render_before_sources(tmp_path):
    write_params(tmp_path)
    assert_one_line_error(glyffuser("render", cwd=tmp_path), "run the sources stage first")


# --- every command answers --help ---------------------------------------------------------------

def all_commands():
    from glyffuser.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)


def test_every_command_has_help_and_none_is_missed(tmp_path, capsys):
    from glyffuser.cli import main

    commands = all_commands()
    assert {"sources", "render", "embed", "train", "sample", "classifier", "evaluate", "umap", "figures", "guide"} <= set(commands)
    for command in commands:  # in this process (a subprocess each cost 40 s of CI); the entry point itself below
        with pytest.raises(SystemExit) as exit:
            main([command, "--help"])
        out = capsys.readouterr().out
        assert exit.value.code == 0 and "--params" in out and "usage: glyffuser " + command in out, command
    result = glyffuser("sample", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "usage: glyffuser sample" in result.stdout


# --- bad input to `glyffuser sample` -------------------------------------------------------------

def sample(tmp_path, tiny_model, *args):
    write_params(tmp_path)
    return glyffuser("sample", "--model", str(tiny_model[0]), "--steps", "2", *args, cwd=tmp_path)


def test_prompts_file_that_is_not_utf8(tmp_path, tiny_model):
    (tmp_path / "prompts.txt").write_bytes("a kind of fish\nsalmon; \xe9\n".encode("latin-1"))
    result = sample(tmp_path, tiny_model, "--prompts-file", "prompts.txt", "--out", "out")
    assert_one_line_error(result, "prompts.txt is not UTF-8 text (byte 23)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["a kind of fish", "--steps", "1001"], "steps must be between 1 and the model's 1000 training timesteps, got 1001"),
    (["a kind of fish", "--guidance", "nan"], "--guidance must be a number from 0 to 100, got nan"),
    (["a kind of fish", "--guidance", "inf"], "--guidance must be a number from 0 to 100, got inf"),
    (["a kind of fish", "--guidance", "1e308"], "--guidance must be a number from 0 to 100, got 1e+308"),
    (["a kind of fish", "--out", "fish"], "--out fish needs an image extension"),
    (["a kind of fish", "--out", "fish.txt"], "--out fish.txt needs an image extension"),
    (["a kind of fish", ""], "an empty prompt asks for nothing (it holds no visible character)"),
    (["   "], "an empty prompt"),
    (["a kind of fish", "--seed", "-1"], "the seed must be 0..4,294,967,295"),
    # issue 29: one prompt limit everywhere, one work limit, the seed that is over the limit named
    (["x" * 201], "the prompt has 201 characters; keep it to 200"),
    (["a kind of fish", "-n", "256", "--steps", "400"], "256 glyphs × 400 steps = 102,400 glyph-steps; one call draws at most 81,920"),
    (["a kind of fish", "-n", "2", "--seed", "4294967295"], "(the last seed, seed + n - 1, is 4,294,967,296)"),
])
def test_sample_refuses_bad_settings_in_one_line(args, message, tmp_path, tiny_model):
    result = sample(tmp_path, tiny_model, *args)
    assert_one_line_error(result, message)
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("fish*"))


def test_prompt_longer_than_the_encoder_keeps_is_warned_with_its_token_count(tmp_path, tiny_model):
    long = "fish;" * 36  # 180 characters, 72 tokens + 2 special > max_length 64
    result = sample(tmp_path, tiny_model, long, "a kind of fish", "-n", "1", "--out", "long.png")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("glyffuser: warning:")]
    assert len(warnings) == 1, result.stderr
    assert "has 74 tokens; the encoder keeps the first 64 (embed.max_length), the rest is ignored" in warnings[0]
    assert (tmp_path / "long.png").is_file()


def test_prompts_file_comments_and_blank_lines_are_skipped(tmp_path, tiny_model):
    (tmp_path / "prompts.txt").write_text("# fish first\na kind of fish\n\n  # an indented comment\na small bird\n",
                                          encoding="utf-8")
    result = sample(tmp_path, tiny_model, "--prompts-file", "prompts.txt", "--out", "out")
    assert result.returncode == 0, result.stderr
    import json

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [e["prompt"] for e in manifest] == ["a kind of fish", "a small bird"]


def test_prompts_file_writes_beside_what_the_folder_holds(tmp_path, tiny_model):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("the user's own notes")
    Image.new("L", (8, 8), 255).save(out / "000-seed0.png")  # an older sample of ours: replaced
    (tmp_path / "prompts.txt").write_text("a kind of fish\n", encoding="utf-8")
    result = sample(tmp_path, tiny_model, "--prompts-file", "prompts.txt", "-n", "2", "--out", "mine")
    assert result.returncode == 0, result.stderr
    assert (out / "keep.txt").read_text() == "the user's own notes"
    assert sorted(p.name for p in out.iterdir()) == ["000-seed0.png", "000-seed1.png", "keep.txt", "manifest.json"]
    assert Image.open(out / "000-seed0.png").size != (8, 8)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_malformed_model_info(tmp_path, tiny_model):
    model = tmp_path / "model"
    shutil.copytree(tiny_model[0], model)
    (model / "glyffuser.json").write_text('{"encoder": ')
    result = sample(tmp_path, (model,), "a kind of fish")
    assert_one_line_error(result, "glyffuser.json is not readable JSON")
    (model / "glyffuser.json").write_text('{"encoder": "x"}')
    assert_one_line_error(sample(tmp_path, (model,), "a kind of fish"), "glyffuser.json lacks 'encoder_sha256'")


# --- bad tables and manifests -------------------------------------------------------------------

def test_malformed_sources_manifest(tmp_path, sources_dir):
    write_params(tmp_path)
    shutil.copytree(sources_dir, tmp_path / "data" / "sources")
    manifest = tmp_path / "data" / "sources" / "sources.json"
    for text in ("not json", "[1, 2]", '{"font": "x"}'):
        manifest.write_text(text)
        assert_one_line_error(glyffuser("render", cwd=tmp_path), "sources.json is not a sources manifest")


def _definitions_copy(rendered, tmp_path, drop=None, meta=None):
    import pyarrow.parquet as pq

    out, _ = rendered
    table = pq.read_table(out.definitions)
    if drop:
        table = table.drop_columns([drop])
    if meta is not None:
        table = table.replace_schema_metadata({b"glyffuser": meta})
    path = tmp_path / "definitions.parquet"
    pq.write_table(table, path)
    return path


def test_parquet_table_missing_a_column(tmp_path, rendered):
    write_params(tmp_path)
    path = _definitions_copy(rendered, tmp_path, drop="definition")
    result = glyffuser("embed", "--definitions", str(path), "--out", "e.parquet", cwd=tmp_path)
    assert_one_line_error(result, "definitions.parquet has no column 'definition' (it has codepoint, character,")
    assert not (tmp_path / "e.parquet").exists()


@pytest.mark.parametrize("meta", [b"{not json", b"[1, 2]"])
def test_parquet_metadata_that_is_not_ours(meta, tmp_path, rendered):
    write_params(tmp_path)
    path = _definitions_copy(rendered, tmp_path, meta=meta)
    result = glyffuser("embed", "--definitions", str(path), "--out", "e.parquet", cwd=tmp_path)
    assert_one_line_error(result, "definitions.parquet: its 'glyffuser' metadata is not a JSON object")


def test_sample_outside_a_checkout_needs_no_params_file_when_every_option_is_given(tmp_path, tiny_model):
    """Issue 40: `glyffuser sample "…" --model X` in a folder without params.yaml failed on the file it did not need."""
    given = ["a kind of fish", "--model", str(tiny_model[0]), "-n", "1", "--steps", "2", "--guidance", "3"]
    result = glyffuser("sample", *given, "--scheduler", "ddim", "--out", "fish.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "fish.png").size[0] > 0
    # an option left to params.yaml still needs it, in one line
    assert_one_line_error(glyffuser("sample", *given, "--out", "fish2.png", cwd=tmp_path),
                          "cannot read parameters file params.yaml")


def test_the_grid_prompts_are_checked_before_the_model_loads(tmp_path):
    """Issue 40: the sample stage cleaned params.yaml's grid prompts only after loading the model."""
    write_params(tmp_path, ("  - a kind of fish\n", '  - "\\u200b "\n'), ("    a kind of fish: 195", '    "\\u200b ": 195'))
    result = glyffuser("sample", "--model", str(tmp_path / "no-model-here"), cwd=tmp_path)
    assert_one_line_error(result, "an empty prompt asks for nothing")
