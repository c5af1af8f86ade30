"""DVC stage `evaluate`: `glyffuser evaluate` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.evaluate import main

sys.exit(main(sys.argv[1:]))
