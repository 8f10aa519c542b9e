"""`MultiTaskModel`: one frozen backbone in memory, many tasks, and batches that mix them.

This is what prompt tuning buys at serving time: a task is its prompts and its head (a few hundred KB), the
backbone is shared. A batch may hold images of different tasks; it runs ONE pass through the backbone:

- Every image starts with the shared patch embedding and runs the blocks together with all the others up to
  its task's first prompted block (those blocks see the image alone, so they compute the same for every task).
- Tasks whose prompts are pure key/value prefixes from their first prompted block to the last (VPT-deep on all
  blocks or on the last k; a linear probe, with no prompt at all) stay in that shared pass to the end: at each
  block every image attends to its own task's prompt keys and values, gathered per image from a per-block stack
  of all tasks' (computed once per task and cached; shorter prompts are padded and masked out).
- Other tasks (shallow, "add", deep prompts that skip blocks or stop before the last) read their prompts'
  outputs from block to block, which the gather cannot give them: they leave the shared pass at their first
  prompted block and finish on their own path, all of that task's images of the batch together.
- Each image's final [CLS] goes through its own task's head.
- Segmentation tasks read every final image token: their images take their task's own path from the start (the
  backbone's weights are still the shared ones in memory) and come back as masks.

Tasks trained with methods that change backbone weights (full, bias, partial-K, LoRA) cannot share a backbone,
nor can "concat-channel" prompts (they change the patch embedding); they are refused (serve each on its own with
`vptune predict` or `Predictor`). Tasks pooling anything but [CLS] (on a backbone without one, Swin: anything but the mean of the image tokens)
finish on their own path.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from ..backbones import backbone_fingerprint
from ..data import build_transform
from ..devices import autocast
from ..errors import CheckpointError, ConfigError
from ..model import BackboneAdapter, PromptedModel, PromptedSegmenter, adapter_for, backbone_data_config
from ..rundir import RunDir
from ..tasks import load_task, read_task_json, task_method
from .masks import class_shares, mask_at
from .predictor import check_image_batch, check_top_k, top_k_rows
from .runtime import resolve_runtime

TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # safe in a URL path and as a module key


@dataclass
class _PromptStack:
    """Every shared-pass task's prompt keys/values for one block, padded to the longest: row 0 is "no prompt"."""
    kv: torch.Tensor          # (tasks + 1, p_max, 2 * attn_dim)
    valid: torch.Tensor       # (tasks + 1, p_max) bool
    row: dict[str, int]       # task name -> its row
    padded: bool              # some row is shorter than p_max (the attention then needs a mask)


class MultiTaskModel(nn.Module):
    """Many task checkpoints on one frozen backbone; `forward(images, tasks)` runs a batch that mixes tasks.

    Args:
        backbone: the shared frozen backbone, or None to build it from the first task's task.json.
        tasks: {name: task directory (or training run)} to load now; more can be added and removed later.
        allow_download: with `backbone` None, fetch the backbone the first task names if it is not on this
            machine (as in `load_task`).
        device: where the backbone and every task run (moved there): auto (CUDA, else MPS, else CPU), cpu,
            cuda, cuda:N or mps. Checkpoints are read onto the CPU first, so tasks trained anywhere load.
        precision: autocast of the forward: auto (bf16 on a GPU that supports it, fp32 elsewhere), fp32, bf16
            or fp16. Logits come back as fp32 whichever it is.
    """

    def __init__(self, backbone: nn.Module | None = None,
                 tasks: Mapping[str, str | os.PathLike] | None = None, *, allow_download: bool = False,
                 device: str = "auto", precision: str = "auto") -> None:
        super().__init__()
        resolved, self.precision = resolve_runtime(device, precision)  # before any task loads
        self._device = torch.device(resolved)
        self.backbone: nn.Module | None = None if backbone is None else backbone.to(self._device)
        self.allow_download = allow_download
        self.tasks = nn.ModuleDict()
        self._stacks: dict[int, _PromptStack] = {}
        for name, directory in (tasks or {}).items():
            self.add_task(name, directory)

    # --------------------------------------------------------------------------------------------- tasks
    def add_task(self, name: str, directory: str | os.PathLike) -> PromptedModel:
        """Load a task onto the shared backbone; refuses one trained on another backbone, image size or
        normalisation, or with a method that changed backbone weights, naming the task and the mismatch."""
        if not isinstance(name, str) or not TASK_NAME.match(name):
            raise ConfigError(f"task name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a "
                              f"letter or digit")
        if name in self.tasks:
            raise ConfigError(f"task {name!r} is already loaded; remove it first to replace it")
        directory = RunDir.find_task(directory)
        meta = read_task_json(directory)
        method = task_method(meta, directory)
        if not method.frozen_backbone:
            raise CheckpointError(f"task {name!r} ({directory}) was trained with method {method.label!r}, which "
                                  f"changes the backbone's weights, so it cannot share the backbone with other "
                                  f"tasks; serve it on its own (vptune predict, or vptune.Predictor)")
        if isinstance(meta["prompt"], dict) and meta["prompt"].get("location") == "concat-channel":
            raise CheckpointError(f"task {name!r} ({directory}) has prompt location 'concat-channel': its prompt "
                                  f"changes the patch embedding itself, which the tasks of a mixed batch share; "
                                  f"serve it on its own (vptune predict, or vptune.Predictor)")
        if self.backbone is not None:
            self._check_compatible(name, directory, meta)
        model = load_task(directory, backbone=self.backbone, check_fingerprint=False,  # checked above
                          allow_download=self.allow_download).eval()
        if self.backbone is None:
            self.backbone = model.backbone
        model.to(self.device)
        self.tasks[name] = model
        self._stacks.clear()
        return model

    def remove_task(self, name: str) -> None:
        if name not in self.tasks:
            raise KeyError(f"no task {name!r}; loaded: {', '.join(self.tasks) or 'none'}")
        del self.tasks[name]
        self._stacks.clear()

    def _check_compatible(self, name: str, directory: os.PathLike, meta: dict) -> None:
        saved, data = meta["backbone"], meta["data"]
        ours = {"backbone weights fingerprint": backbone_fingerprint(self.backbone),
                "image size": list(adapter_for(self.backbone).img_size),
                "normalisation mean": [round(v, 6) for v in self.data_config["mean"]],
                "normalisation std": [round(v, 6) for v in self.data_config["std"]]}
        theirs = {"backbone weights fingerprint": saved.get("fingerprint"), "image size": saved["img_size"],
                  "normalisation mean": [round(v, 6) for v in data["mean"]],
                  "normalisation std": [round(v, 6) for v in data["std"]]}
        for what, value in theirs.items():
            if value is not None and value != ours[what]:
                raise CheckpointError(f"task {name!r} ({directory}) cannot share this backbone: its {what} is "
                                      f"{value}, the loaded tasks' is {ours[what]}; serve it with its own backbone")

    @property
    def device(self) -> torch.device:
        """Where the backbone's weights are (the device asked for, unless the model was moved since)."""
        return next(self.backbone.parameters()).device if self.backbone is not None else self._device

    @property
    def data_config(self) -> dict:
        """Input size and normalisation every task shares (those of the backbone)."""
        if self.backbone is None:
            raise ConfigError("no backbone yet: give one, or add a task first")
        return backbone_data_config(self.backbone)

    def transform(self):
        """The test transform for a decoded uint8 image (3, H, W) -> normalised (3, S, S)."""
        data = self.data_config
        return build_transform(data["input_size"][-1], data["mean"], data["std"])

    def describe(self, name: str) -> dict:
        """A loaded task as the server lists it: classes, method, prompt config, image size."""
        task = self.tasks[name]
        return {"name": name, "task": self.kind(name),
                "classes": self.class_names(name), "num_classes": task.num_classes,
                "method": task.method.to_dict() if getattr(task, "method", None) else None,
                "prompt": task.prompt_config.to_dict(), "image_size": list(task.adapter.img_size)}

    def kind(self, name: str) -> str:
        """What a loaded task predicts: "segmentation" (a mask) or "classification" (top-k classes)."""
        return "segmentation" if isinstance(self.tasks[name], PromptedSegmenter) else "classification"

    def class_names(self, name: str) -> list[str]:
        return self.tasks[name].labels

    # ------------------------------------------------------------------------------------------- forward
    @torch.inference_mode()
    def forward(self, images: torch.Tensor, tasks: Sequence[str]) -> list[torch.Tensor]:
        """Normalised images (B, 3, H, W) and each image's task name -> each image's logits: (classes,) for a
        classification task; (classes, H, W) for a segmentation task, whose images take their task's own path
        (every final image token is read, which the shared pass, ending at [CLS], does not give)."""
        check_image_batch(images, self.data_config["input_size"], self.backbone)
        if len(tasks) != len(images):
            raise ValueError(f"{len(images)} images but {len(tasks)} task names")
        unknown = sorted(set(tasks) - self.tasks.keys())
        if unknown:
            raise KeyError(f"unknown task(s) {unknown}; loaded: {', '.join(self.tasks) or 'none'}")
        logits: list[torch.Tensor | None] = [None] * len(tasks)
        by_task = _rows_by_task(tasks)
        images = images.to(self.device)
        with autocast(self.device, self.precision):
            for name, rows in by_task.items():
                if isinstance(self.tasks[name], PromptedSegmenter):
                    for row, out in zip(rows, self.tasks[name](images[rows]).float()):
                        logits[row] = out
            shared = [row for row, name in enumerate(tasks) if not isinstance(self.tasks[name], PromptedSegmenter)]
            if shared:
                features = self._features(images[shared], [tasks[row] for row in shared])
                for name, rows in _rows_by_task([tasks[row] for row in shared]).items():
                    for row, out in zip(rows, self.tasks[name].classify(features[rows]).float()):
                        logits[shared[row]] = out
        return logits

    def predict(self, images: torch.Tensor, tasks: Sequence[str], top_k: int | Sequence[int] = 5,
                sizes: Sequence[tuple[int, int]] | None = None) -> list[list[dict] | dict]:
        """For each image, its task's answer: top-k {class, index, probability} (`top_k` may differ per image), or
        for a segmentation task {"mask": class indices (H, W) uint8 at the image's original `sizes` (default: the
        input size), "classes": each class's share of the pixels}."""
        ks = [top_k] * len(tasks) if isinstance(top_k, int) else list(top_k)
        for k in set(ks):
            check_top_k(k)
        sizes = list(sizes) if sizes is not None else [tuple(images.shape[-2:])] * len(tasks)
        answers = []
        for out, name, k, size in zip(self(images, tasks), tasks, ks, sizes):
            if out.dim() == 3:
                mask = mask_at(out, size)
                answers.append({"mask": mask, "classes": class_shares(mask, self.class_names(name))})
            else:
                answers.append(top_k_rows(out.softmax(dim=0)[None].cpu(), self.class_names(name), k)[0])
        return answers

    def _features(self, images: torch.Tensor, tasks: list[str]) -> torch.Tensor:
        """The shared pass: what each image's head reads (B, d) (the final normed [CLS], or on a backbone without one
    the mean of the final image tokens), each image with its own task's prompts."""
        leave_at = {name: model.stem_depth for name, model in self.tasks.items() if not self._in_shared_pass(model)}
        first_model = next(iter(self.tasks.values()))
        adapter = first_model.adapter
        x = first_model.embed(images)  # no task here changes the embedding (concat-channel is refused)
        rows = torch.arange(len(tasks), device=images.device)  # batch rows still in the shared pass, in x's order
        names = list(tasks)                                      # their task names
        features = images.new_empty(len(tasks), adapter.embed_dim)
        for i in range(adapter.depth):
            x, rows, names = self._leave(i, x, rows, names, leave_at, features)
            if not names:
                return features
            kv, mask = self._gather_prompts(i, adapter, names)
            last_cls = i == adapter.depth - 1 and _own_pooling(adapter) == "cls"  # the last block: [CLS] only
            if kv is None and not last_cls:
                x = adapter.block(i, x)
            else:
                x = adapter.prefix_block(i, x, kv, queries=1 if last_cls else None, prompt_mask=mask)
        features[rows] = adapter.pool(x, _own_pooling(adapter))
        return features

    def _leave(self, block: int, x: torch.Tensor, rows: torch.Tensor, names: list[str], leave_at: dict[str, int],
               features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Images of own-path tasks whose first prompted block is `block` finish on their task's own path."""
        for name in {n for n in names if leave_at.get(n) == block}:
            mine = torch.tensor([n == name for n in names], device=x.device)
            features[rows[mine]] = self.tasks[name].features_from_stem(x[mine])
            x, rows = x[~mine], rows[~mine]
            names = [n for n in names if n != name]
        return x, rows, names

    def _gather_prompts(self, index: int, adapter: BackboneAdapter,
                        names: list[str]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Each image's own task's prompt keys/values at this block: (B, p_max, kv_width) and a (B, p_max)
        mask when prompts differ in length or some image's task has none here; (None, None) if no image has one."""
        stack = self._stacks.get(index)
        if stack is None:
            stack = self._stacks[index] = self._build_stack(index, adapter)
        which = torch.tensor([stack.row.get(n, 0) for n in names], device=stack.kv.device)
        if stack.kv.shape[1] == 0 or not bool(which.any()):
            return None, None
        if not stack.padded and bool(which.all()):
            return stack.kv[which], None
        return stack.kv[which], stack.valid[which]

    def _build_stack(self, index: int, adapter: BackboneAdapter) -> _PromptStack:
        rows = {name: model.prompt_kv(index, model.prompt_tokens_at(index)[None])[0]  # (p [+ kv prompts], kv width)
                for name, model in self.tasks.items()
                if self._in_shared_pass(model) and model.prompts is not None and model.is_prompted(index)}
        p_max = max((len(task_kv) for task_kv in rows.values()), default=0)
        kv_dim = adapter.kv_width(index) if adapter.supports_prefix(index) else 0
        kv = torch.zeros(len(rows) + 1, p_max, kv_dim, device=self.device, dtype=adapter.dtype)
        valid = torch.zeros(len(rows) + 1, p_max, dtype=torch.bool, device=self.device)
        row = {}
        for r, (name, task_kv) in enumerate(rows.items(), start=1):
            kv[r, :len(task_kv)] = task_kv
            valid[r, :len(task_kv)] = True
            row[name] = r
        padded = any(len(task_kv) < p_max for task_kv in rows.values())
        return _PromptStack(kv, valid, row, padded)

    @staticmethod
    def _in_shared_pass(model: PromptedModel) -> bool:
        """True when the task's prompts only ever act as key/value prefixes (see the module docstring)."""
        adapter = model.adapter
        if not all(adapter.supports_prefix(i) for i in range(adapter.depth)):
            return False
        if model.prompt_config.pooling != _own_pooling(adapter):  # the shared pass ends with the backbone's pooling
            return False
        if model.prompts is None:
            return True
        first = model.prompt_blocks[0]
        return model.location.is_tokens and model.prompt_blocks == tuple(range(first, adapter.depth))


def _own_pooling(adapter: BackboneAdapter) -> str:
    """What the shared pass pools: the final [CLS], or the mean of the image tokens on a backbone without one."""
    return "cls" if adapter.has_class_token else "image-pool"


def _rows_by_task(tasks: Sequence[str]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for row, name in enumerate(tasks):
        rows.setdefault(name, []).append(row)
    return rows
