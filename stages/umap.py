"""DVC stage `umap`: `glyffuser umap` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys
from pathlib import Path

# This file shares its name with the umap-learn package: take stages/ off the import path first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from glyffuser.stages.umap import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
