"""DVC stage `embed`: `glyffuser embed` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.embed import main

sys.exit(main(sys.argv[1:]))
