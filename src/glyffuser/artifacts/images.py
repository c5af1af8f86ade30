"""Pixel convention in one place: PNG bytes <-> model tensors, and labelled grids.

PNG: 8-bit greyscale, white paper 255, black ink 0 (see glyphs.py). Model space: x = png/127.5 - 1,
so the background is +1 and full ink -1; generated tensors map back the same way, clipped.
"""

from __future__ import annotations

import base64
import io
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from glyffuser.errors import GlyffuserError


def to_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def from_png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("L")


def pngs_to_tensor(pngs: list[bytes], resolution: int, source: Path | None = None,
                   codepoints: list[int] | None = None) -> torch.Tensor:
    """(N, 1, R, R) float32 in [-1, 1]; downsampled with PIL's antialiasing (box filter) once. A PNG that does
    not decode is one error line naming `source` (the table) and the glyph's codepoint."""
    out = np.empty((len(pngs), 1, resolution, resolution), dtype=np.uint8)
    for i, png in enumerate(pngs):
        try:
            img = from_png(png)
        except (OSError, ValueError, TypeError) as err:  # PIL's UnidentifiedImageError is an OSError
            which = f"U+{int(codepoints[i]):04X}" if codepoints is not None else f"row {i}"
            why = "not an image" if isinstance(err, UnidentifiedImageError) else str(err).splitlines()[0][:80]
            raise GlyffuserError(f"{source or 'a glyphs table'}: the PNG of {which} does not decode ({why}): "
                                 "re-run the render stage (dvc repro render)") from None
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.BOX if img.width % resolution == 0 else Image.LANCZOS)
        out[i, 0] = np.asarray(img)
    return torch.from_numpy(out).float().div_(127.5).sub_(1.0)


def tensor_to_images(x: torch.Tensor) -> list[Image.Image]:
    """(N, 1, R, R) model-space tensor -> greyscale PIL images (values clipped to [-1, 1])."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return [Image.fromarray(a[0], mode="L") for a in arr]


def labelled_grid(images: list[Image.Image], columns: int, row_labels: list[str] | None = None,
                  cell: int = 64, label_width: int = 150, font: ImageFont.ImageFont | None = None) -> Image.Image:
    """Images in rows of `columns`, each row captioned on the left (e.g. with its prompt)."""
    rows = (len(images) + columns - 1) // columns
    lw = label_width if row_labels else 0
    pad = 2
    grid = Image.new("L", (lw + columns * (cell + pad) + pad, rows * (cell + pad) + pad), 255)
    draw = ImageDraw.Draw(grid)
    font = font or ImageFont.load_default(size=12)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        grid.paste(img.resize((cell, cell), Image.NEAREST if img.width < cell else Image.LANCZOS),
                   (lw + pad + c * (cell + pad), pad + r * (cell + pad)))
    for r, label in enumerate(row_labels or []):
        for j, line in enumerate(textwrap.wrap(label, width=max(8, lw // 7))[:3]):
            draw.text((4, pad + r * (cell + pad) + 4 + 14 * j), line, fill=0, font=font)
    return grid


def thumbnail(png: bytes, size: int = 32) -> str:
    """A glyph as a base64 PNG of `size` px in 4 grey levels (~250 bytes: keeps the HTML page small)."""
    img = from_png(png)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BOX if img.width % size == 0 else Image.LANCZOS)
    levels = (np.asarray(img).astype(np.int32) * 4 // 256 * 85).astype(np.uint8)  # 0, 85, 170, 255
    buf = io.BytesIO()
    Image.fromarray(levels).quantize(4).save(buf, "PNG", optimize=True, bits=2)
    return base64.b64encode(buf.getvalue()).decode()


def radical_label(r: int) -> str:
    """'⽔ 85': the Kangxi Radicals block (U+2F00..) holds the 214 radicals in order."""
    return f"{chr(0x2F00 + r - 1)} {r}"
