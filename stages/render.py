"""DVC stage `render`: runs `glyffuser render` with the pipeline's default paths (see dvc.yaml)."""

import sys

from glyffuser.cli import main

sys.exit(main(["render", *sys.argv[1:]]))
