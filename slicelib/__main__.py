"""``python -m slicelib ...`` (also what ``torchrun -m slicelib train ...`` runs)."""

import sys

from slicelib.cli import main

if __name__ == "__main__":
    sys.exit(main())
