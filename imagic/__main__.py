"""`python -m imagic` is the same as the `imagic` command."""

import sys

from imagic.cli import main

sys.exit(main())
