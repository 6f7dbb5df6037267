"""``python -m attnmesh``: the command line (see :mod:`attnmesh.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
