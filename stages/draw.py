"""DVC stage `draw`: `glyffuser draw` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.draw import main

sys.exit(main(sys.argv[1:]))
