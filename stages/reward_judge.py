"""DVC stage `reward_judge`: `glyffuser reward_judge` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.reward_judge import main

sys.exit(main(sys.argv[1:]))
