"""Bad input through the real CLI: one line on stderr, exit 1, nothing left behind."""

import os
import shutil
import subprocess
import sys

import pytest

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
    text = (REPO / "profiles" / "smoke.yaml").read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "params.yaml").write_text(text)


def test_invalid_parameter(tmp_path):
    write_params(tmp_path, ("image_size: 64", "image_size: -3"))
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


@pytest.mark.parametrize("command", ["sources", "render", "embed"])
def test_help(command, tmp_path):
    result = glyffuser(command, "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--params" in result.stdout
