"""DVC stage `sample`: `glyffuser sample` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.sample import main

sys.exit(main(sys.argv[1:]))
