"""DVC stage `figures`: runs `glyffuser figures` with the pipeline's default paths (see dvc.yaml)."""

import sys

from glyffuser.cli import main

sys.exit(main(["figures", *sys.argv[1:]]))
