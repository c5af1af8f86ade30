import numpy as np
import pyarrow.parquet as pq
import pytest
from fontTools import subset
from fontTools.ttLib import TTFont
from PIL import Image

from glyffuser.artifacts.fonts import GlyphRenderer
from glyffuser.artifacts.images import from_png
from glyffuser.artifacts.source_manifest import SourceManifest
from glyffuser.artifacts.tables import read_table
from glyffuser.errors import GlyffuserError
from glyffuser.params import with_overrides
from glyffuser.stages.render import RenderOutputs, run_render
from glyffuser.stages.sources import collect_sources


def test_tables_and_report(rendered):
    out, report = rendered
    defs, meta = read_table(out.definitions)
    glyphs, gmeta = read_table(out.glyphs)
    assert defs.num_rows == glyphs.num_rows == report["glyphs"] > 300
    assert defs.column("codepoint").to_pylist() == glyphs.column("codepoint").to_pylist()
    assert report["in_range"] == report["without_definition"] + report["empty_after_cleaning"] + report["undrawable"] + report["glyphs"]
    assert sum(report["splits"].values()) == report["glyphs"]
    assert meta["unicode_version"] == "17.0.0" and gmeta["image_size"] == 32
    rows = {r["character"]: r for r in defs.to_pylist()}
    assert rows["魚"]["radical"] == 195 and rows["魚"]["definition"].startswith("fish")
    assert rows["鳥"]["radical"] == 196
    assert not any("(same as" in r["definition"] for r in rows.values())


def test_glyphs_are_centred_ink_on_white(rendered):
    out, _ = rendered
    glyphs, _ = read_table(out.glyphs)
    for png in glyphs.column("png").to_pylist()[::25]:
        img = np.asarray(from_png(png))
        assert img.shape == (32, 32) and img.dtype == np.uint8
        assert img[0].min() > 200 and img[:, 0].min() > 200  # white border (margin)
        ink = img < 128
        assert 0.05 < ink.mean() < 0.7
        rows, cols = np.nonzero(img < 250)
        # centred by the ink bounding box, to within a pixel
        assert abs((rows.min() + rows.max()) / 2 - 15.5) <= 1
        assert abs((cols.min() + cols.max()) / 2 - 15.5) <= 1


def test_preview_is_a_grid(rendered):
    out, _ = rendered
    with Image.open(out.preview) as im:
        assert im.mode == "L" and im.width > 8 * 32


def test_image_size_change_keeps_definitions_bytes(params, sources_dir, rendered, tmp_path):
    out, _ = rendered
    bigger = RenderOutputs.under(tmp_path)
    run_render(with_overrides(params, {"render.image_size": 48}), sources_dir, bigger)
    assert bigger.definitions.read_bytes() == out.definitions.read_bytes()
    assert bigger.glyphs.read_bytes() != out.glyphs.read_bytes()


def _subset_font(src, dst, text):
    options = subset.Options()
    options.notdef_outline = True
    font = TTFont(src)
    sub = subset.Subsetter(options)
    sub.populate(text=text)
    sub.subset(font)
    font.save(dst)


def test_undrawable_characters_are_skipped_and_counted(params, sources_dir, tmp_path):
    manifest = SourceManifest.read(sources_dir)
    small_font = tmp_path / "small.otf"
    _subset_font(sources_dir / manifest.font_file, small_font, "魚鮮鯉")
    p = with_overrides(params, {"sources.font": str(small_font)})
    collect_sources(p.sources, tmp_path / "sources")
    report = run_render(p, tmp_path / "sources", RenderOutputs.under(tmp_path / "render"))
    assert report["glyphs"] == 3
    assert report["undrawable"] == report["in_range"] - report["without_definition"] - report["empty_after_cleaning"] - 3
    chars = pq.read_table(tmp_path / "render" / "definitions.parquet").column("character").to_pylist()
    assert chars == ["魚", "鮮", "鯉"]


def test_tofu_is_detected(sources_dir, tmp_path):
    """A character mapped to the missing-glyph box (.notdef) is not drawable."""
    manifest = SourceManifest.read(sources_dir)
    font = TTFont(sources_dir / manifest.font_file)
    for table in font["cmap"].tables:
        if ord("魚") in table.cmap:
            table.cmap[ord("魚")] = ".notdef"
    path = tmp_path / "tofu.otf"
    font.save(path)
    renderer = GlyphRenderer(path, 32, 0.06)
    assert renderer.render("魚") is None
    assert renderer.render("鳥") is not None


def test_font_that_draws_nothing_fails_cleanly(params, sources_dir, tmp_path):
    manifest = SourceManifest.read(sources_dir)
    latin = tmp_path / "latin.otf"
    _subset_font(sources_dir / manifest.font_file, latin, "abc")
    p = with_overrides(params, {"sources.font": str(latin)})
    collect_sources(p.sources, tmp_path / "sources")
    out = RenderOutputs.under(tmp_path / "render")
    with pytest.raises(GlyffuserError, match="draws none of the"):
        run_render(p, tmp_path / "sources", out)
    assert not (tmp_path / "render").exists() or list((tmp_path / "render").iterdir()) == []


def test_range_without_definitions_fails(params, sources_dir, tmp_path):
    p = with_overrides(params, {"render.ranges": ["U+0041-U+005A"]})
    with pytest.raises(GlyffuserError, match="no character with an English definition"):
        run_render(p, sources_dir, RenderOutputs.under(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("font", ["/nonexistent/font.otf", "Comic Sans"])
def test_missing_font(params, tmp_path, font):
    with pytest.raises(GlyffuserError, match="neither a file nor a known font name"):
        collect_sources(with_overrides(params, {"sources.font": font}).sources, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_non_font_file(params, tmp_path):
    fake = tmp_path / "fake.otf"
    fake.write_bytes(b"this is not a font" * 100)
    with pytest.raises(GlyffuserError, match="not a usable OpenType/TrueType font"):
        collect_sources(with_overrides(params, {"sources.font": str(fake)}).sources, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_sources_manifest(sources_dir):
    manifest = SourceManifest.read(sources_dir)
    assert manifest.font_name == "Noto Sans SC"
    assert manifest.unicode_version == "17.0.0"
    assert len(manifest.font_sha256) == 64
