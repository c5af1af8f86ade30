"""DVC stage `guide`: `glyffuser guide` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.guide import main

sys.exit(main(sys.argv[1:]))
