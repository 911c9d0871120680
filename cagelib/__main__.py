"""``python -m cagelib <command>``: the workbench's one command line (``cagelib.cli``)."""
import sys

from .cli import main

sys.exit(main())
