"""Drawing one character as a centred greyscale glyph, and spotting characters a font cannot draw.

Pixel convention, used everywhere downstream: 8-bit greyscale PNG, white paper (255) and black ink
(0), the glyph centred by its ink bounding box. Models see `x = png / 127.5 - 1`, so the background
is +1 and full ink is -1 (see `images.py`).
"""

from __future__ import annotations

from pathlib import Path

from fontTools.ttLib import TTFont
from PIL import Image, ImageChops, ImageDraw, ImageFont

from glyffuser.errors import GlyffuserError

BACKGROUND = 255
INK = 0


class GlyphRenderer:
    """Renders characters of one font at `size`×`size`, leaving `margin`·size blank on each side."""

    def __init__(self, font_path: Path, size: int, margin: float, font_index: int = 0):
        self.size = size
        self.box = size - 2 * round(margin * size)  # the square the ink must fit in
        try:
            self.font = ImageFont.truetype(str(font_path), size=self.box, index=font_index)
            self.cmap = TTFont(font_path, fontNumber=font_index, lazy=True).getBestCmap() or {}
        except OSError as err:
            raise GlyffuserError(f"cannot load font {font_path}: {err}") from None
        # The font's own "missing glyph" drawing (.notdef, usually a box): an unmapped codepoint.
        unmapped = next(cp for cp in range(0xE000, 0xF900) if cp not in self.cmap)
        self._notdef = self._ink(chr(unmapped))

    def _ink(self, char: str) -> Image.Image | None:
        """The ink of `char` cropped to its bounding box, white-on-black 'L'; None if no ink."""
        canvas = Image.new("L", (2 * self.box, 2 * self.box), 0)
        ImageDraw.Draw(canvas).text((self.box // 2, self.box // 2), char, font=self.font, fill=255)
        bbox = canvas.getbbox()
        return canvas.crop(bbox) if bbox else None

    def render(self, char: str) -> Image.Image | None:
        """The glyph on white paper, or None if the font cannot draw `char` (no ink, tofu, unmapped)."""
        if ord(char) not in self.cmap:
            return None
        ink = self._ink(char)
        if ink is None or self._is_notdef(ink):
            return None
        if max(ink.size) > self.box:  # rare: glyphs that overflow their em box are shrunk to fit
            scale = self.box / max(ink.size)
            ink = ink.resize((max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.LANCZOS)
        glyph = Image.new("L", (self.size, self.size), 0)
        glyph.paste(ink, ((self.size - ink.width) // 2, (self.size - ink.height) // 2))
        return ImageChops.invert(glyph)

    def _is_notdef(self, ink: Image.Image) -> bool:
        ref = self._notdef
        return ref is not None and ink.size == ref.size and ImageChops.difference(ink, ref).getbbox() is None
