"""DVC stage `classifier`: `glyffuser classifier` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.classifier import main

sys.exit(main(sys.argv[1:]))
