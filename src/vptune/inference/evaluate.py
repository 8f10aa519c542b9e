"""Evaluation: logits over a data set, top-1 / top-5, per-class accuracy, confusion matrix (and its PNG)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .._io import atomic_write_text, save_figure
from ..data import DataError, builtin_name, collate, read_data
from ..data.builtin import cache_path
from ..data.segmentation_dataset import is_segmentation_source, read_segmentation_task, segmentation_splits
from ..devices import maybe_compile, under_autocast
from ..errors import ConfigError
from ..rundir import RunDir
from ..tasks import load_task, read_task_json, segmentation_head_of
from .runtime import log_runtime, resolve_runtime
from .segmentation_metrics import evaluate_segmentation


SPLITS = ("test", "val", "train", "trainval")


@torch.no_grad()
def predict_logits(forward: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, device: torch.device,
                   desc: str = "eval", quiet: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `forward` over a loader of (inputs, labels): returns (outputs, labels) on the CPU."""
    outputs, labels = [], []
    for inputs, target in tqdm(loader, desc=desc, disable=quiet, leave=False):
        outputs.append(forward(inputs.to(device, non_blocking=True)).float().cpu())
        labels.append(target.cpu())
    return torch.cat(outputs), torch.cat(labels)


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top1 (and top5 where there are more than 5 classes), per-class accuracy, confusion matrix."""
    num_classes = logits.shape[1]
    predictions = logits.argmax(1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1).float()).tolist()
    metrics = {"top1": (predictions == labels).float().mean().item(), "num_images": len(labels),
               "per_class": per_class, "confusion": confusion.tolist()}
    if num_classes > 5:
        top5 = logits.topk(5, dim=1).indices
        metrics["top5"] = (top5 == labels[:, None]).any(1).float().mean().item()
    return metrics


def evaluate_dataset(model: torch.nn.Module, dataset: Dataset, *, batch_size: int = 64, device: str = "cpu",
                     precision: str = "auto", compile: bool = False, quiet: bool = True) -> dict:
    """`evaluate_logits` of `model` (on `device`) over every item of `dataset` (items: normalised image tensor,
    label), its forward under `precision`'s autocast (auto: bf16 on a GPU that supports it, fp32 elsewhere),
    through torch.compile with `compile`."""
    device, precision = resolve_runtime(device, precision)
    run = under_autocast(maybe_compile(model.eval(), compile), device, precision)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    logits, labels = predict_logits(run, loader, torch.device(device), desc="test", quiet=quiet)
    return evaluate_logits(logits, labels)


class _Relabelled(Dataset):
    """A data set's items with their labels mapped to the task's class indices."""

    def __init__(self, dataset: Dataset, mapping: list[int]) -> None:
        self.dataset, self.mapping = dataset, mapping

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, self.mapping[label]


def _relabelled(dataset: Dataset, data_names: Sequence[str], task_names: Sequence[str], source: str) -> Dataset:
    """Data whose classes are some of the task's (a test set of a few classes, or in another order) is scored by
    class name; a class the task never learned is an error naming it."""
    unknown = [name for name in data_names if name not in task_names]
    if unknown:
        raise DataError(f"{source} has classes the task was not trained on: {unknown}; the task's classes are "
                        f"{list(task_names)}: evaluate on data whose classes are among them")
    return _Relabelled(dataset, [list(task_names).index(name) for name in data_names])


def format_metrics(metrics: dict, class_names: Sequence[str]) -> str:
    """A plain-text table: overall accuracy, then accuracy per class (segmentation: mIoU, then IoU per class)."""
    if "miou" in metrics:
        return _format_segmentation(metrics, class_names)
    lines = [f"top-1  {metrics['top1']:.4f}   ({metrics['num_images']} images)"]
    if "top5" in metrics:
        lines.append(f"top-5  {metrics['top5']:.4f}")
    width = max(len(str(name)) for name in class_names)
    lines.append("")
    lines.append(f"{'class':<{width}}  accuracy  images")
    for name, acc, row in zip(class_names, metrics["per_class"], metrics["confusion"]):
        shown = f"{acc:8.4f}" if sum(row) else f"{'-':>8}"  # a class this data set does not have
        lines.append(f"{name:<{width}}  {shown}  {sum(row):6d}")
    return "\n".join(lines)


def _format_segmentation(metrics: dict, class_names: Sequence[str]) -> str:
    lines = [f"mIoU            {metrics['miou']:.4f}   ({metrics['num_images']} images, {metrics['num_pixels']:,} "
             f"scored pixels)", f"pixel accuracy  {metrics['pixel_accuracy']:.4f}", ""]
    width = max(len(str(name)) for name in class_names)
    lines.append(f"{'class':<{width}}  IoU     pixels")
    for name, row in zip(class_names, metrics["confusion"]):
        iou = metrics["per_class_iou"][name]
        lines.append(f"{name:<{width}}  {f'{iou:.4f}' if iou is not None else '-':>6}  {sum(row):,}")
    return "\n".join(lines)


def save_confusion_png(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = torch.tensor(confusion, dtype=torch.float)
    rates = matrix / matrix.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=90)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in ((ij, int(matrix[ij])) for ij in ((i, j) for i in range(len(matrix)) for j in range(len(matrix)))):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def evaluate(path: str | os.PathLike, *, data: str | None = None, split: str = "test", batch_size: int = 64,
             device: str = "auto", precision: str = "auto", compile: bool = False, quiet: bool = True,
             allow_download: bool = False) -> tuple[dict, list[str], list[Path]]:
    """Evaluate a task (or a run's best task) on a split of a data set (default: the one it was trained on), on
    `device` (auto: CUDA, else MPS, else CPU) under `precision`'s autocast (auto: bf16 on a GPU that supports it,
    fp32 elsewhere), through torch.compile with `compile`. The checkpoint is read onto the CPU, then moved.

    Writes the metrics as JSON and a confusion-matrix PNG into the run's eval/ folder; returns
    (metrics, class names, written files).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    device, precision = resolve_runtime(device, precision)  # before the task and its data load
    task = RunDir.find_task(path)
    meta = read_task_json(task)
    training = meta.get("training", {})
    source = data or training.get("data")
    if source is None:
        raise ConfigError(f"{task} does not record its training data; pass --data")
    recorded_builtin = data is None and builtin_name(source)
    if recorded_builtin and not cache_path(recorded_builtin).is_file():
        # a task directory from someone else must not make this machine download or install anything unasked
        raise ConfigError(f"{task} was trained on the built-in data set {recorded_builtin!r}, which is not on this "
                          f"machine yet; pass --data {recorded_builtin} to fetch it (or --data PATH for your own)")
    if segmentation_head_of(meta):
        metrics, names = _evaluate_segmentation(task, meta, source, split, batch_size, device, precision, compile,
                                                allow_download)
        return metrics, names, _write_eval(task, source, split, metrics, names)
    if is_segmentation_source(source):  # its images/ and masks/ folders would be read as two classes
        raise DataError(f"{source} is segmentation data (images with masks), but {task} classifies; evaluate it on "
                        f"images with class labels, or give a segmentation task")
    data = read_data(source, protocol=training.get("protocol", "vtab1k"), seed=training.get("seed", 0))
    model = load_task(task, allow_download=allow_download).to(device)  # after the data is known to be good
    splits = data.datasets(img_size=meta["data"]["input_size"][-1], mean=tuple(meta["data"]["mean"]),
                           std=tuple(meta["data"]["std"]), recipe=training.get("recipe", "vtab"))
    dataset = getattr(splits, split)
    if dataset is None:
        raise DataError(f"{source} has no {split!r} split")
    if model.class_names and list(splits.class_names) != list(model.class_names):
        dataset = _relabelled(dataset, splits.class_names, model.class_names, source)
    log_runtime("eval", device, precision, compile)
    metrics = evaluate_dataset(model, dataset, batch_size=batch_size, device=device, precision=precision,
                               compile=compile, quiet=quiet)
    names = model.class_names or splits.class_names
    return metrics, names, _write_eval(task, source, split, metrics, names)


def _write_eval(task: Path, source: str, split: str, metrics: dict, names: Sequence[str]) -> list[Path]:
    """The metrics as JSON and the confusion matrix as a PNG, in the task's eval/ folder."""
    out = RunDir.eval_dir_for(task)
    metrics_path = atomic_write_text(out / f"{split}_metrics.json",
                                     json.dumps({"data": source, "split": split, **metrics}, indent=2) + "\n")
    return [metrics_path, save_confusion_png(metrics["confusion"], names, out / f"{split}_confusion.png")]


def _evaluate_segmentation(task: Path, meta: dict, source: str, split: str, batch_size: int, device: str,
                           precision: str, compile: bool, allow_download: bool) -> tuple[dict, list[str]]:
    """`evaluate` for a segmentation task: mIoU, pixel accuracy and per-class IoU at each mask's full resolution,
    and a confusion matrix of pixels. The data's class names must be the task's, in order (a mask's indices mean
    them)."""
    data = read_segmentation_task(source, seed=meta.get("training", {}).get("seed", 0))
    model = load_task(task, allow_download=allow_download).to(device)  # after the data is known to be good
    names = model.labels
    if data.class_names != names:
        raise DataError(f"{source} names its classes {data.class_names}, but the task was trained on {names}; a "
                        f"mask's indices mean the task's classes: evaluate on data with the same classes.txt")
    splits = segmentation_splits(data, img_size=meta["data"]["input_size"][-1], mean=tuple(meta["data"]["mean"]),
                                 std=tuple(meta["data"]["std"]))
    run = under_autocast(maybe_compile(model.eval(), compile), device, precision)
    log_runtime("eval", device, precision, compile)
    loader = DataLoader(getattr(splits, split), batch_size=batch_size, shuffle=False, collate_fn=collate)
    metrics = {**evaluate_segmentation(run, loader, model.num_classes, names, device),
               "num_images": len(getattr(splits, split))}
    return metrics, names
