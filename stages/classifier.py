"""DVC stage `classifier`: runs `glyffuser classifier` with the pipeline's default paths (see dvc.yaml)."""

import sys

from glyffuser.cli import main

sys.exit(main(["classifier", *sys.argv[1:]]))
