"""``python -m underlay.migrations init DIR``: create a migrations directory."""

import sys

from underlay.migrations._scaffold import main

if __name__ == "__main__":
    sys.exit(main())
