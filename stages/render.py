"""DVC stage `render`: `glyffuser render` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.render import main

sys.exit(main(sys.argv[1:]))
