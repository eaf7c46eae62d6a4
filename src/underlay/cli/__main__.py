"""``python -m underlay.cli``: the same as the ``underlay`` command."""

import sys

from underlay.cli import main

if __name__ == "__main__":
    sys.exit(main())
