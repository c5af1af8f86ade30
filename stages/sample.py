"""DVC stage `sample`: runs `glyffuser sample` with the pipeline's default paths (see dvc.yaml)."""

import sys

from glyffuser.cli import main

sys.exit(main(["sample", *sys.argv[1:]]))
