"""DVC stage `second_judge`: `glyffuser second_judge` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.second_judge import main

sys.exit(main(sys.argv[1:]))
