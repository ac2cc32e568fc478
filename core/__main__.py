"""``python -m core <command>``: the command-line entry point."""

import sys

from core.cli import main

sys.exit(main())
