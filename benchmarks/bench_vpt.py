"""Speed/memory benchmark of the VPT fast path; same as `vptune bench`. Run `python benchmarks/bench_vpt.py --help`."""
import sys

from vptune.bench import main

sys.exit(main())
