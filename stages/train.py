"""DVC stage `train`: runs `glyffuser train` with the pipeline's default paths (see dvc.yaml)."""

import sys

from glyffuser.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
