"""`python -m vptune ...` (and `torchrun -m vptune ...`): the command line."""
import sys

from .cli import main

sys.exit(main())
