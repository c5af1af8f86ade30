"""glyffuser: a reproducible text-to-glyph diffusion pipeline."""

__version__ = "0.1.0"
