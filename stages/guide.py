"""DVC stage `guide`: runs `glyffuser guide` with the pipeline's default paths (see dvc.yaml)."""

import sys

from glyffuser.cli import main

sys.exit(main(["guide", *sys.argv[1:]]))
