"""Using trained tasks: predict on image files, evaluate on a data set, describe a task or a backbone."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, atomic_write_text, load_task, read_task_json
from .data import load_data
from .data.datasets import Sample, read_image
from .data.transforms import build_transform
from .evaluate import evaluate_dataset, save_confusion_png
from .model import PromptedViT, count_parameters


def resolve_task(path: str | os.PathLike) -> Path:
    """A task checkpoint directory: `path` itself, or the best checkpoint of a training run directory."""
    path = Path(path)
    for candidate in (path, path / "best", path / "last"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise CheckpointError(f"{path} is neither a task checkpoint (with {CONFIG_FILE}) nor a training run "
                          f"(with best/{CONFIG_FILE}); train one with `vptune train --output {path}`")


class Predictor:
    """A loaded task plus the test transform its backbone expects."""

    def __init__(self, model: PromptedViT, meta: dict) -> None:
        self.model = model.eval()
        data = meta["data"]
        self.transform = build_transform(data["input_size"][-1], data["mean"], data["std"])
        self.class_names = model.class_names or [str(i) for i in range(model.head.out_features)]

    @classmethod
    def from_task(cls, path: str | os.PathLike, backbone: torch.nn.Module | str | None = None) -> "Predictor":
        task = resolve_task(path)
        return cls(load_task(task, backbone=backbone), read_task_json(task))

    @torch.no_grad()
    def predict_files(self, paths: Sequence[str | os.PathLike], top_k: int = 5) -> list[dict]:
        """Top-k classes with probabilities for each image file (errors name the file)."""
        images = torch.stack([self.transform(read_image(Sample(Path(p), -1, "command line"))) for p in paths])
        probabilities = self.model(images).softmax(dim=1)
        top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
        return [{"image": str(path),
                 "top": [{"class": self.class_names[i], "index": int(i), "probability": float(p)}
                         for p, i in zip(values.tolist(), indices.tolist())]}
                for path, values, indices in zip(paths, top.values, top.indices)]


def evaluate_task(path: str | os.PathLike, *, data: str | None = None, split: str = "test", batch_size: int = 64,
                  device: str = "cpu", quiet: bool = True) -> tuple[dict, list[str], list[Path]]:
    """Evaluate a task on a split of a data set; writes metrics JSON and a confusion-matrix PNG beside it."""
    task = resolve_task(path)
    meta = read_task_json(task)
    training = meta.get("training", {})
    source = data or training.get("data")
    if source is None:
        raise ValueError(f"{task} does not record its training data; pass --data")
    model = load_task(task).to(device)
    size = meta["data"]["input_size"][-1]
    splits = load_data(source, img_size=size, mean=tuple(meta["data"]["mean"]), std=tuple(meta["data"]["std"]),
                       protocol=training.get("protocol", "vtab1k"), recipe=training.get("recipe", "vtab"),
                       seed=training.get("seed", 0))
    if model.class_names and list(splits.class_names) != list(model.class_names):
        raise ValueError(f"{source} has classes {splits.class_names}, but the task was trained on "
                         f"{model.class_names}; evaluate on data with the same classes")
    dataset = getattr(splits, split)
    if dataset is None:
        raise ValueError(f"{source} has no {split!r} split")
    metrics = evaluate_dataset(model, dataset, batch_size=batch_size, device=device, quiet=quiet)
    names = model.class_names or splits.class_names
    out = task.parent / "eval" if task.name in ("best", "last") else task / "eval"
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / f"{split}_metrics.json"
    atomic_write_text(metrics_path, json.dumps({"data": source, "split": split, **metrics}, indent=2) + "\n")
    png = save_confusion_png(metrics["confusion"], names, out / f"{split}_confusion.png")
    return metrics, names, [metrics_path, png]


def describe(target: str | os.PathLike) -> str:
    """`vptune info`: a task's prompt config, trainable share and size on disk, or a backbone's shape."""
    if Path(target).exists():
        task = resolve_task(target)
        meta = read_task_json(task)
        model = load_task(task)
        counts = count_parameters(model)
        size = (task / WEIGHTS_FILE).stat().st_size
        lines = [f"task         {task}",
                 f"backbone     {meta['backbone']['name']} at {meta['backbone']['img_size']} px "
                 f"(fingerprint {meta['backbone']['fingerprint']})",
                 f"method       {meta.get('method', 'vpt')}",
                 f"prompt       {json.dumps(meta['prompt'])}",
                 f"classes      {meta['num_classes']}: {', '.join(map(str, meta.get('class_names') or []))}",
                 str(counts),
                 f"checkpoint   {size:,} bytes ({WEIGHTS_FILE})"]
        return "\n".join(lines)
    from .backbones import create_backbone

    backbone = create_backbone(str(target), pretrained=False)
    params = sum(p.numel() for p in backbone.parameters())
    return (f"backbone     {target}: {len(backbone.blocks)} blocks, width {backbone.embed_dim}, "
            f"patch {backbone.patch_embed.patch_size}, {backbone.num_prefix_tokens} prefix token(s), "
            f"{params:,} parameters\nVPT-deep with p prompts adds {len(backbone.blocks)} x p x {backbone.embed_dim} "
            f"parameters (+ head)")
