"""DVC stage `align`: `glyffuser align` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.align import main

sys.exit(main(sys.argv[1:]))
