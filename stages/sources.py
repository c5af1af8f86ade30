"""DVC stage `sources`: `glyffuser sources` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.sources import main

sys.exit(main(sys.argv[1:]))
