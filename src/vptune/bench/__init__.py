"""`vptune bench`: speed and memory of VPT's fast "prefix" path against the reference and the frozen backbone
(from Python: `vptune.bench.run_bench(BenchSettings(...))`).

For each model, prompt mode and prompt length p it measures, side by side in one process (the configs of a
group take turns within every repeat, so load from other processes hits them alike), after warm-up, the
median of several repeats of:
- training step time: forward + cross-entropy + backward (to the prompts and head) + SGD-momentum step (fp16:
  through a gradient scaler, as a training loop would);
- peak memory of one training step, above the resident model and batch. CUDA: `max_memory_allocated`.
  CPU: each model's configs run in a fresh subprocess whose allocator returns freed blocks to the OS at once
  (MALLOC_MMAP_THRESHOLD_), reading the kernel's resident-set high-water mark (reset per config);
- inference throughput, images/s at batch `--batch` and at batch 1 (eval + no_grad, prompt K/V cached);
for every precision of `--precisions` (fp32, or autocast to bf16 / fp16) and, with `--compile`, eagerly and
compiled (`torch.compile`); a group holds the floor and every path in every such variant. Each figure is also
given as a ratio to the reference "tokens" path and to the frozen backbone ("floor", no prompt) of the same
variant, and to the same config in fp32 eager: the median over repeats of the ratio within each round, so
that changes in the machine's load between rounds cancel. Random weights (`pretrained=False`): speed does not
depend on the values. With `--loader DATA` it also times the training data loader alone (images/s) and puts it
beside the model's training images/s at the same batch, to show which of the two limits training.

The room: `settings.py` (what to measure, checked), `grid.py` (the configs), `timing.py` (timed side by side),
`memory.py` (CPU memory in a subprocess), `loader.py` (the data loader alone), `report.py` (rows, table, files),
`run.py` (one run, start to end).
"""
from .grid import MODELS, Config
from .report import loader_lines, table
from .run import run_bench
from .settings import BenchSettings

__all__ = ["BenchSettings", "run_bench", "MODELS", "Config", "table", "loader_lines"]
