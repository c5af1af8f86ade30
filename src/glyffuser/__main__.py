"""`python -m glyffuser ...`: the same CLI as the `glyffuser` command."""

import sys

from glyffuser.cli import main

sys.exit(main())
