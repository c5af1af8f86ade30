"""DVC stage `train`: `glyffuser train` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.train import main

sys.exit(main(sys.argv[1:]))
