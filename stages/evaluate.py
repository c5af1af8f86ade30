"""DVC stage `evaluate`: runs `glyffuser evaluate` with the pipeline's default paths (see dvc.yaml)."""

import sys

from glyffuser.cli import main

sys.exit(main(["evaluate", *sys.argv[1:]]))
