"""Shared fixtures: real Unihan data and the real Noto font on a few hundred characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from glyffuser.params import Params, load_params, with_overrides
from glyffuser.render import RenderOutputs, run_render
from glyffuser.sources import collect_sources

REPO = Path(__file__).resolve().parents[1]
# Fish (魚) and bird (鳥) radicals, plus water (氵) characters: ~460 glyphs with definitions.
SMALL_RANGES = ["U+9B5A-U+9C7F", "U+9CE5-U+9DFF", "U+6C34-U+6CFF"]


@pytest.fixture(scope="session")
def params() -> Params:
    return with_overrides(load_params(REPO / "params.yaml"),
                          {"render.ranges": SMALL_RANGES, "render.image_size": 32, "render.preview_count": 8})


@pytest.fixture(scope="session")
def sources_dir(params, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "sources"
    collect_sources(params.sources, out)
    return out


@pytest.fixture(scope="session")
def rendered(params, sources_dir, tmp_path_factory) -> tuple[RenderOutputs, dict]:
    out = RenderOutputs.under(tmp_path_factory.mktemp("render"))
    report = run_render(params, sources_dir, out)
    return out, report
