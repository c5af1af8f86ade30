"""Stage `render`: Unihan + font -> definitions and glyphs tables, a preview grid and a report."""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from glyffuser.artifacts.atomic import atomic_outputs, check_outputs
from glyffuser.artifacts.fonts import GlyphRenderer
from glyffuser.artifacts.images import from_png, to_png
from glyffuser.artifacts.source_manifest import SourceManifest
from glyffuser.artifacts.tables import write_table
from glyffuser.artifacts.unihan import clean_definition, parse_radical_strokes, read_field, split_of
from glyffuser.command import inputs, run_command
from glyffuser.errors import GlyffuserError
from glyffuser.params import Params
from glyffuser.progress import progress
from glyffuser.reports import RenderReport, make_report, report_json


@dataclass(frozen=True)
class RenderOutputs:
    definitions: Path
    glyphs: Path
    preview: Path
    report: Path

    @staticmethod
    def under(folder: Path) -> RenderOutputs:
        return RenderOutputs(
            folder / "definitions.parquet", folder / "glyphs.parquet", folder / "preview.png", folder / "report.json"
        )


def _codepoints(ranges: list[tuple[int, int]]) -> list[int]:
    return sorted({cp for lo, hi in ranges for cp in range(lo, hi + 1)})


def run_render(params: Params, sources_dir: Path, out: RenderOutputs) -> dict:
    check_outputs(out.definitions, out.glyphs, out.preview, out.report)
    manifest = SourceManifest.read(sources_dir)
    p = params.render
    definitions = read_field(sources_dir / "Unihan_Readings.txt", "kDefinition")
    radicals = read_field(sources_dir / "Unihan_IRGSources.txt", "kRSUnicode")

    # Assigned Han characters are exactly those with a kRSUnicode value.
    in_range = [cp for cp in _codepoints(p.codepoint_ranges()) if cp in radicals]
    with_definition = [cp for cp in in_range if cp in definitions]
    if not with_definition:
        raise GlyffuserError(f"render.ranges {p.ranges} contain no character with an English definition")

    renderer = GlyphRenderer(sources_dir / manifest.font_file, p.image_size, p.margin, manifest.font_index)
    rows: dict[str, list] = {k: [] for k in ("codepoint", "character", "definition", "raw_definition",
                                             "radical", "residual_strokes", "split")}
    pngs: list[bytes] = []
    counts = {"cleaned": 0, "empty_after_cleaning": 0, "undrawable": 0}
    for cp in progress(desc="render", unit="glyph", iterable=with_definition, total=len(with_definition)):
        raw = definitions[cp]
        definition = clean_definition(raw)
        counts["cleaned"] += definition != raw
        if not definition:
            counts["empty_after_cleaning"] += 1
            continue
        glyph = renderer.render(chr(cp))
        if glyph is None:
            counts["undrawable"] += 1
            continue
        radical, residual = parse_radical_strokes(radicals[cp])
        for key, value in zip(rows, (cp, chr(cp), definition, raw, radical, residual,
                                     split_of(cp, p.split.validation, p.split.test))):
            rows[key].append(value)
        pngs.append(to_png(glyph))
    if not pngs:
        raise GlyffuserError(f"font {manifest.font_name!r} draws none of the {len(with_definition)} characters in render.ranges")

    report = {
        "in_range": len(in_range),
        "without_definition": len(in_range) - len(with_definition),
        **counts,
        "glyphs": len(pngs),
        "splits": {s: rows["split"].count(s) for s in ("train", "validation", "test")},
        "unicode_version": manifest.unicode_version,
        "font": manifest.font_name,
        "font_sha256": manifest.font_sha256,
    }
    # definitions.parquet must not depend on image size or margin: embeddings depend on it alone.
    definitions_meta = {"unicode_version": manifest.unicode_version, "font_sha256": manifest.font_sha256,
                        "ranges": p.ranges, "split": p.split.model_dump()}
    glyphs_meta = {**definitions_meta, "image_size": p.image_size, "margin": p.margin,
                   "pixels": "8-bit greyscale PNG, background 255, ink 0"}
    schema = pa.schema([("codepoint", pa.int32()), ("character", pa.string()), ("definition", pa.string()),
                        ("raw_definition", pa.string()), ("radical", pa.int16()), ("residual_strokes", pa.int16()),
                        ("split", pa.string())])
    with atomic_outputs(out.definitions, out.glyphs, out.preview, out.report) as (defs_tmp, glyphs_tmp, preview_tmp, report_tmp):
        write_table(pa.table(rows, schema=schema), defs_tmp, definitions_meta)
        glyph_table = pa.table({"codepoint": pa.array(rows["codepoint"], pa.int32()), "png": pa.array(pngs, pa.binary())})
        write_table(glyph_table, glyphs_tmp, glyphs_meta)
        pick = sorted(random.Random(params.base.seed).sample(range(len(pngs)), min(p.preview_count, len(pngs))))
        preview_grid([pngs[i] for i in pick], [f"{chr(rows['codepoint'][i])} {rows['definition'][i]}" for i in pick],
                     sources_dir / manifest.font_file, manifest.font_index).save(preview_tmp)
        report_tmp.write_text(report_json(make_report(RenderReport, report, "the render stage's report")), encoding="utf-8")
    return report


def preview_grid(pngs: list[bytes], captions: list[str], font_path: Path, font_index: int = 0,
                 columns: int = 8, cell: int = 128) -> Image.Image:
    """Glyphs in a grid, each with its caption wrapped under it (the font has Latin letters too)."""

    caption_font = ImageFont.truetype(str(font_path), size=12, index=font_index)
    line_h, n_lines, pad = 15, 3, 6
    cell_w, cell_h = cell + 2 * pad, cell + n_lines * line_h + 2 * pad
    rows = (len(pngs) + columns - 1) // columns
    grid = Image.new("L", (columns * cell_w, rows * cell_h), 255)
    draw = ImageDraw.Draw(grid)
    for i, (png, caption) in enumerate(zip(pngs, captions)):
        x, y = (i % columns) * cell_w + pad, (i // columns) * cell_h + pad
        glyph = from_png(png).resize((cell, cell), Image.BILINEAR)
        grid.paste(glyph, (x, y))
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=200)
        lines = textwrap.wrap(caption, width=22)[:n_lines]
        for j, line in enumerate(lines):
            draw.text((x, y + cell + 2 + j * line_h), line, font=caption_font, fill=0)
    return grid


# `glyffuser render`; the DVC stage `render` runs it as stages/render.py.
def add_arguments(p) -> None:
    inputs(p, "sources")
    p.add_argument("--out", type=Path, default=Path("data/render"))


def command(args) -> dict:
    from glyffuser.params import load_params

    return run_render(load_params(args.params), args.sources, RenderOutputs.under(args.out))


def main(argv: list[str] | None = None) -> int:
    return run_command("render", __doc__.splitlines()[0], add_arguments, command, argv)
