"""DVC stage `sources`: runs `glyffuser sources` with the pipeline's default paths (see dvc.yaml)."""

import sys

from glyffuser.cli import main

sys.exit(main(["sources", *sys.argv[1:]]))
