"""DVC stage `embed`: runs `glyffuser embed` with the pipeline's default paths (see dvc.yaml)."""

import sys

from glyffuser.cli import main

sys.exit(main(["embed", *sys.argv[1:]]))
