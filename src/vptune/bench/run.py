"""A bench run from start to end: every model's groups timed, memory and the loader measured, the report written."""
from __future__ import annotations

import os
import sys
import time

import torch

from .grid import grid, spec_of
from .loader import time_loader
from .memory import cpu_memory
from .report import loader_lines, make_rows, table, write_results
from .settings import BenchSettings
from .timing import Results, Runner, compiler_settings, time_group


def measure(args: BenchSettings, results: Results, started: float) -> None:
    """Every model's groups, timed side by side in this process, then CPU memory in a subprocess per model
    and the data loader alone; the outputs are rewritten after each group (a run that is stopped keeps those)."""
    for alias in args.models:
        groups = grid(args, alias, first=len(results.loads))
        runner, repeats = Runner(alias, args), args.repeats or spec_of(alias).repeats
        for g, group in groups.items():
            results.configs += [c for c in group if c not in results.configs]
            with compiler_settings(sum(c.compiled for c in group)):
                time_group(runner, g, group, repeats, results)
            write_results(args, results, started)
        img_size = runner.images.shape[-1]
        del runner  # its models and batches: the memory subprocess and the loader do not need them
        if args.memory and torch.device(args.device).type != "cuda":
            print(f"  {alias}: peak memory (one subprocess)", file=sys.stderr, flush=True)
            model_configs = list(dict.fromkeys(c for group in groups.values() for c in group))
            peaks = cpu_memory(alias, model_configs, args)
            for g, group in groups.items():
                results.samples.update({(g, c, "train_peak_mb"): [peaks[c]] for c in group})
        if args.loader:
            time_loader(args, results, alias, img_size)
        write_results(args, results, started)


def run_bench(settings: BenchSettings) -> list[dict]:
    """Measure everything `settings` asks for (resolved here if it was not), write bench.csv / .json / .md into its
    `out` folder, print the table; returns its rows."""
    args = settings.resolved()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = Results()
    measure(args, results, started=time.time())
    rows = make_rows(results, args)
    print(table(rows))
    for loader in results.loaders:
        print("\n".join(loader_lines(loader, rows)))
    failed = [c.label() for c, bad in results.compile_failed.items() if bad]
    if failed:
        print(f"warning: torch.compile failed for {', '.join(failed)}: their 'compiled' figures are eager "
              f"ones, from the first call that failed on (the log above says why)", file=sys.stderr)
    load = results.load_summary()
    # The bench's own threads count in the load average: only load well beyond them is other processes' work.
    if load and load["max"] > 1.25 * torch.get_num_threads() and not args.device.startswith("cuda"):
        print(f"warning: the 1-min load average reached {load['max']} with {torch.get_num_threads()} torch threads "
              f"on {os.cpu_count()} CPUs: other processes competed for them; absolute figures suffer (ratios are "
              f"paired per round)", file=sys.stderr)
    return rows
