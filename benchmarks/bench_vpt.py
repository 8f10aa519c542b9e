"""Speed/memory benchmark of the VPT fast path; same as `vptune bench`. Run `python benchmarks/bench_vpt.py --help`."""
import sys

from vptune.cli import main  # the command line's entry, wherever the bench's own code lives

sys.exit(main(["bench", *sys.argv[1:]]))
