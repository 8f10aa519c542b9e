"""CPU memory of a training step, measured in a fresh process per model (`python -m vptune.bench.memory SPEC`): its
allocator returns freed blocks to the system at once (MALLOC_MMAP_THRESHOLD_), and the kernel's resident-set
high-water mark, reset per config, is read."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import torch

from .settings import BenchSettings
from .grid import Config
from .timing import Runner, compiler_settings


def _proc_status_mb(key: str) -> float:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) / 1024


def memory_worker(spec: dict) -> None:
    """Runs in a fresh process: prints {config: peak MB above the resident model and batch} as JSON."""
    args = SimpleNamespace(**spec["args"])
    if args.threads:
        torch.set_num_threads(args.threads)
    runner, result = Runner(spec["alias"], args), {}
    for fields in spec["configs"]:
        cfg = Config(**fields)
        with compiler_settings(1 if cfg.compiled else 0):
            # First-call set-up (kernels, thread pools) is not the config's memory. A compiled config sets up at
            # the measured batch, so that the measured step does not compile a graph for a new batch size.
            runner.train_step(cfg, batch=None if cfg.compiled else 1)
            Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark (VmHWM) to the current RSS
            before = _proc_status_mb("VmRSS")
            runner.train_step(cfg)
        result[json.dumps(fields)] = max(_proc_status_mb("VmHWM") - before, 0.0)
        runner.models.pop(cfg)
    print(json.dumps(result))


def cpu_memory(alias: str, configs: list[Config], args: BenchSettings) -> dict[Config, float]:
    runner_args = {k: getattr(args, k) for k in ("device", "batch", "train_batch", "threads", "img_size")}
    # Each config's precision and compile setting travel in its own fields (Config's dataclass fields).
    spec = {"alias": alias, "configs": [asdict(c) for c in configs], "args": runner_args}
    # A fixed mmap threshold turns off glibc's heap reuse of large freed blocks, so RSS follows live memory.
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, "-m", "vptune.bench.memory", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    if done.returncode:  # a bug of ours: the worker's own traceback says where
        raise RuntimeError(f"the peak-memory subprocess for {alias} failed (exit {done.returncode}):\n{done.stderr}")
    return {Config(**json.loads(k)): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


if __name__ == "__main__":
    memory_worker(json.loads(sys.argv[1]))
