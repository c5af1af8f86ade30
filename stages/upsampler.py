"""DVC stage `upsampler`: `glyffuser upsampler` with the pipeline's default paths (see dvc.yaml), without the CLI module."""

import sys

from glyffuser.stages.upsampler import main

sys.exit(main(sys.argv[1:]))
