"""``python -m stack3d_core`` = the ``stack3d`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
