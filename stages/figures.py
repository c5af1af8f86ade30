"""DVC stage `figures`: `glyffuser figures` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.figures import main

sys.exit(main(sys.argv[1:]))
