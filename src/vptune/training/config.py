"""`TrainConfig`: every setting of a training run, with its help text, its validation, and YAML + flags merging.

The command line's `vptune train` flags are generated from these fields (`help` in each field's metadata), so a
Python user gets exactly what the CLI gets:

    cfg = load_train_config("settings.yaml", epochs=5)    # the file, then the overrides on top
    cfg = TrainConfig(data="digits", method="vpt-deep")   # or directly
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..backbones import DEFAULT_BACKBONE
from ..data import BUILTIN_DATASETS, MAX_PIXELS, builtin_name
from ..devices import AUTO as AUTO_DEVICE, PRECISIONS, check_device, resolve_device, resolve_precision
from ..errors import ConfigError
from ..data.segmentation_dataset import SEGMENTATION_BUILTINS, is_segmentation_source
from ..methods import HEAD_LR, Method, get_method, method_names
from ..model import HEADS, INITS, LOCATIONS, MERGES, POOLINGS, PromptConfig, pruned_count

CACHE_STEM = ("auto", "off")
TASKS = ("auto", "classification", "segmentation")
AUTO = "auto"  # lr: searched first (vptune.experiments.train_with_lr_search); num_tokens: from the backbone
OPTIMIZERS = ("sgd", "adamw")
HEAD_INITS = ("random", "probe", "calibrated-probe")
# Settings a resumed run may change (`train(..., resume=True, changes=...)`, `vptune train --resume RUN --epochs 20`):
# they do not change what the finished epochs computed. Everything else continues as config.yaml says.
RESUME_MAY_CHANGE = ("epochs", "device", "num_workers", "tensorboard", "test_subset", "compile")
# the settings `resolved()` fills from the method's defaults: never None in a config.yaml that vptune wrote
# settings that only a method training prompts reads (pooling is every method's: it is what the head reads)
PROMPT_SETTINGS = ("num_tokens", "prompt_layers", "prompt_location", "prompt_dropout", "prompt_project",
                   "prompt_init", "prompt_shared", "prompt_merge")
METHOD_OPTIONS = ("lora_rank", "fourier_share", "kv_tokens", "prune_tokens", "prune_segments", "metric_weight")  # settings that are one method's own option
RESOLVED_FIELDS = ("optimizer", "lr", "head_lr", "head_norm", "head_init", "prompt_init")
# A ViT at 4096 px has (4096 / 16)^2 = 65,536 tokens, beyond what attention fits in memory on one GPU today
MAX_IMG_SIZE = 4096
MAX_SEED = 2**32 - 1  # numpy's and most tools' seed range; torch's derived seeds wrap at 64 bits
RENAMED = {"cache_frozen": "cache_stem"}  # old setting names still read from config files
# A segmentation head starts random, not at a converged probe as a classifier's does, so it has further to go: at
# the classifier's HEAD_LR (1e-2) the linear head on pasted-animals (112 px, 5 epochs, seed 0) reached test mIoU
# 0.113, at 1e-1 0.153 and at 5e-1 0.159 (one screen while building it; `vptune ablate segmentation` runs with it)
SEGMENTATION_HEAD_LR = 10 * HEAD_LR


def _setting(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Every knob of a training run; `vptune train --help` shows the same help texts."""

    data: str = _setting("digits", "built-in data set (digits, fashion-mnist, animal-mnist; segmentation: "
                                   "pasted-animals, surface-defects) or a path: image folder (with or without "
                                   "train/val/test split folders), CSV, VTAB-1k list folder, FGVC json folder; "
                                   "segmentation: images/ and masks/ folders, VOC, ADE20K, a CSV with a mask column")
    output: str = _setting("runs/task", "run directory to write")
    method: str = _setting("vpt-deep", f"tuning method: {', '.join(method_names())}")
    backbone: str = _setting(DEFAULT_BACKBONE, f"{DEFAULT_BACKBONE} (offline default) or a timm model name of the "
                                                "ViT or Eva family (e.g. vit_small_patch16_dinov3)")
    weights: str | None = _setting(None, "local .safetensors/.pth weights for the backbone (offline use of any "
                                         "supported timm model)")
    img_size: int | None = _setting(None, "input size in pixels (default: the backbone's, 224)")
    # prompts (VPT methods)
    num_tokens: int | str = _setting(10, "prompt length p; auto: 10 per 64 image tokens an attention sees, the "
                                         "prompts capped at 1 percent of the backbone's parameters (10 at 112 px and "
                                         "40 at 224 px on the default ViT-S/14; a candidate default, docs/recipe.md), "
                                         "or one a class with --prompt-init cls")
    prompt_layers: str | list[int] | None = _setting(
        None, "blocks with a prompt: all, 'first K', 'last K' or indices '0,1,5' (default: the mode's)")
    prompt_location: str = _setting("prepend", "prepend (extra tokens after [CLS]), add (added to the existing tokens), "
                                               "prepend-pixel (learned pixel patches, embedded by the frozen patch "
                                               "embedding, as extra tokens) or concat-channel (learned extra input "
                                               "channels)", LOCATIONS)
    prompt_dropout: float = _setting(0.0, "prompt dropout")
    prompt_project: int | None = _setting(None, "prompt projection dim (default: none)")
    prompt_init: str | None = _setting(None, "prompt initialisation: patches (the backbone's own patch tokens at each "
                                             "prompted block's input, from training images), xavier (the paper's), "
                                             "cls (each prompt a class's mean [CLS] embedding; p = classes), "
                                             "zeros or normal (default: the method's, patches for VPT where prompts "
                                             "are prepended without projection, else xavier)", INITS)
    pooling: str = _setting("cls", "what the head reads: cls (the final [CLS]), image-pool (mean of the image tokens), "
                                   "prompt-pool (mean of the prompts' outputs), global-pool (all tokens)", POOLINGS)
    prompt_shared: bool = _setting(False, "VPT-deep: one prompt shared by every prompted block (deep-shared)")
    prompt_merge: str = _setting("drop", "Swin: what prompts carried to the end of a stage do at patch merging: drop "
                                         "(the paper) or tile (the original code: 4 copies through the merge)", MERGES)
    lora_rank: int = _setting(8, "LoRA rank for --method lora")
    fourier_share: float = _setting(0.5, "--method vfpt: the share of each block's prompt tokens through the 2-D "
                                         "Fourier transform (0 < share <= 1)")
    kv_tokens: int = _setting(5, "--method e2vpt: learned keys and values added to every block's attention")
    prune_tokens: float = _setting(0.0, "--method e2vpt: prune this share of each block's prompt tokens after a first "
                                        "run, rewind the rest and train again (0: no pruning; doubles training)")
    prune_segments: float = _setting(0.0, "--method e2vpt: prune this share of the kept tokens' segments (16 a token) "
                                          "the same way (0: none)")
    metric_weight: float = _setting(0.01, "--method da-vpt: weight of the metric loss that guides the last prompted "
                                          "block's prompts toward the classes (0: VPT-deep)")
    # data
    task: str = _setting("auto", "auto (segmentation when the data are images with masks: a masks/ folder beside "
                                 "images/, VOC, ADE20K, a CSV with a mask column, or a built-in segmentation "
                                 "task; else classification), classification or segmentation", TASKS)
    seg_head: str | None = _setting(None, "segmentation head: linear (BatchNorm and a 1 x 1 convolution on the final "
                                          "patch tokens, DINOv2's linear protocol; the default) or pup (SETR's "
                                          "progressive upsampling, the VPT paper's)", HEADS)
    protocol: str = _setting("vtab1k", "built-in data: vtab1k (train800/val200/test) or full", ("vtab1k", "full"))
    recipe: str = _setting("vtab", "augmentation: vtab (plain resize) or fgvc (random crop + flip)",
                           ("vtab", "fgvc"))
    final: bool | None = _setting(None, "train the whole schedule on train + val and report test from its last "
                                        "epoch, with no model selection (VTAB-1k's final run). Default: on where "
                                        "cross-fit is (few images: a val of a few dozen cannot choose an epoch, "
                                        "docs/recipe.md) unless --no-refit, else off")
    refit: bool = _setting(True, "train the final model on train + val, to the epoch chosen on val (the linear probe: "
                                 "with its L2 chosen by 5-fold cross-validation), and report test from it, so no "
                                 "training image is left out; about twice the training time, RUN/selection holds "
                                 "the run that chose. Off: test from the best val epoch's model, as the paper's "
                                 "ablations do")
    skip_bad: bool = _setting(False, "skip unreadable images with a warning instead of stopping")
    max_pixels: int = _setting(MAX_PIXELS, "refuse images with more pixels than this (decompression bombs; Pillow's "
                                           "own limit is 89 million)")
    subset: int | None = _setting(None, "use at most N images per split (quick checks)")
    test_subset: int | None = _setting(None, "score the test split on a fixed stratified sample of N of its images, "
                                             "the same for every seed (default: all of them)")
    num_workers: int | str = _setting("auto", "data loader worker processes: auto (none on the CPU, where images are "
                                              "decoded before training; on a GPU the cores less one, at most 8) or "
                                              "a number")
    cache_stem: str = _setting("auto", "auto: run the stem (the frozen blocks before the first prompt) once per "
                                       "image, not every epoch, when the recipe has no random augmentation and it "
                                       "fits in memory; off: every step", CACHE_STEM)
    grad_checkpointing: bool = _setting(False, "recompute the frozen blocks in the backward pass: about a fifth "
                                               "of the training memory for about 1.4x the step time")
    # optimisation
    epochs: int = _setting(10, "epochs")
    min_steps: int | None = _setting(None, "train at least this many optimizer steps: on few images the epochs grow "
                                           "to max(--epochs, ceil(min_steps / steps per epoch)) (default: off)")
    batch_size: int = _setting(32, "batch size")
    optimizer: str | None = _setting(None, "default: the method's (adamw; the original VPT's sgd is one flag "
                                           "away)", OPTIMIZERS)
    lr: float | str | None = _setting(
        None, "base lr of the tuned tensors, scaled by batch/256 (default: the method's); 'auto': first a short "
              "pruned search of it on train/val (vptune sweep with 4 values, at most 5 epochs each, costing about "
              "two to three training runs), then the run with the winner")
    head_lr: float | None = _setting(None, "base lr of the head, scaled by batch/256 (default: the method's; a "
                                           "segmentation head's 0.1)")
    weight_decay: float = _setting(1e-4, "weight decay")
    head_norm: bool | None = _setting(None, "standardise the [CLS] embedding before the head with the training "
                                            "set's statistics (fixed, computed once from the initial model); "
                                            "default: the method's (on for VPT)")
    head_init: str | None = _setting(None, "random; probe: start the head at the converged linear probe on the "
                                           "initial model's features, L2 chosen on val (or by cross-validation) "
                                           "for top-1; calibrated-probe: the L2 whose held-out log-loss is "
                                           "lowest, so the head is no surer than it is on unseen images "
                                           "(default: the method's, probe for VPT)", HEAD_INITS)
    label_smoothing: float = _setting(0.0, "label smoothing of the training loss (0: none; validation and the "
                                           "probe use the plain loss)")
    cross_fit: bool | None = _setting(None, "each step's head is the linear probe fitted on the other training "
                                            "images' features, so the tuned tensors learn from a held-out loss; the "
                                            "head validated and saved is the probe on all of them, refitted every "
                                            "epoch (docs/recipe.md; classification). Default: on for a "
                                            "probe-started head on a frozen backbone when the training images are at "
                                            "most twice the head's input width, where the probe can fit every one")
    clip_grad: float | None = _setting(None, "clip the gradient norm of the trained tensors to this value")
    momentum: float = _setting(0.9, "SGD momentum")
    warmup_epochs: float = _setting(1.0, "linear warm-up epochs before cosine decay")
    scale_lr: bool = _setting(True, "scale learning rates by batch/256")
    seed: int = _setting(0, "random seed; same seed, same metrics on CPU")
    tensorboard: bool = _setting(True, "write TensorBoard event files to RUN/tensorboard (when the tensorboard "
                                       "package is installed: pip install 'vptune[tensorboard]')")
    device: str = _setting(AUTO_DEVICE, "auto (CUDA, else MPS, else CPU; config.yaml records the one chosen), "
                                        "cpu, cuda, cuda:N or mps")
    precision: str = _setting("auto", "auto (bf16 on a GPU with bf16 units, fp32 elsewhere; config.yaml records the "
                                      "one chosen), fp32, bf16 or fp16 (autocast around the forward; the trained "
                                      "tensors stay fp32; fp16 adds a gradient scaler)", PRECISIONS)
    half_backbone: bool = _setting(False, "hold the frozen backbone's weights in the --precision's 16-bit type: half "
                                          "its memory (needs --precision bf16 or fp16 and a method that keeps the "
                                          "backbone frozen)")
    compile: bool = _setting(False, "torch.compile the forward (training and evaluation); falls back to eager with "
                                    "a log line where the platform cannot compile")

    # ------------------------------------------------------------------------------------------- derived
    def tuning_method(self) -> Method:
        return get_method(self.method, lora_rank=self.lora_rank, fourier_share=self.fourier_share,
                          kv_tokens=self.kv_tokens, prune_tokens=self.prune_tokens,
                          prune_segments=self.prune_segments, metric_weight=self.metric_weight)

    def fits_probe(self) -> bool:
        """Whether training is the fitted linear probe (logistic regression on frozen [CLS] features): the linear
        method on a classification task. A segmentation task's linear head trains by gradient steps."""
        return self.tuning_method().head_only and self.task != "segmentation"

    def unused_by_method(self, names: typing.Iterable[str]) -> list[str]:
        """Of the settings `names`, those this config's method does not read: given on purpose, they would change
        nothing (`--num-tokens` with `--method linear`, `--lora-rank` with VPT)."""
        method, trains_prompts = self.tuning_method(), self.trains_prompts()
        return [name for name in names if (name in PROMPT_SETTINGS and not trains_prompts)
                or (name in METHOD_OPTIONS and name not in method.options())]

    def trains_prompts(self) -> bool:
        return self.tuning_method().prompt_config(PromptConfig(num_tokens=1)).num_tokens > 0

    def prompt_config(self, num_tokens: int | None = None) -> PromptConfig:
        """The prompts' settings, with `num_tokens` in place of the config's own where given (num_tokens auto is only
        known with the backbone: `training.loop.with_num_tokens` sets it)."""
        num_tokens = self.num_tokens if num_tokens is None else num_tokens
        if num_tokens == AUTO:
            raise ConfigError("num_tokens auto is set from the backbone when training starts "
                              "(training.loop.with_num_tokens); give a number, or prompt_config(num_tokens=P)")
        try:
            method = self.tuning_method()
            init = self.prompt_init or self._default_prompt_init(method)
            return PromptConfig(num_tokens=num_tokens, mode=getattr(method, "mode", "deep"),
                                layers=self.prompt_layers, location=self.prompt_location,
                                dropout=self.prompt_dropout, project=self.prompt_project, init=init,
                                pooling=self.pooling, shared=self.prompt_shared, merge=self.prompt_merge)
        except ValueError as err:
            raise ConfigError(str(err)) from err

    def resolved(self) -> "TrainConfig":
        """Fill the method-dependent defaults and validate; the result is what config.yaml records."""
        self.validate()
        method = self.tuning_method()
        task = self._resolved_task()
        segmentation = task == "segmentation"
        if segmentation:
            self._check_segmentation(method)
        elif self.seg_head is not None:
            raise ConfigError(f"seg_head chooses a segmentation head, but {self.data} is a classification task (no "
                              f"masks); leave out --seg-head, or give segmentation data (images with masks)")
        cfg = dataclasses.replace(
            self, task=task, seg_head=(self.seg_head or HEADS[0]) if segmentation else None,
            data=self.data if _is_builtin(self.data) else _resolved_path(self.data),
            weights=_resolved_path(self.weights) if self.weights else None,
            # a segmentation task's linear head trains by gradient steps like every other method's head
            optimizer=self.optimizer or ("adamw" if segmentation else method.optimizer),
            lr=self.lr if self.lr is not None else method.default_lr,
            head_lr=self.head_lr if self.head_lr is not None else SEGMENTATION_HEAD_LR if segmentation
            else method.default_head_lr,
            head_norm=False if segmentation else self.head_norm if self.head_norm is not None else method.head_norm,
            head_init="random" if segmentation else self.head_init or method.head_init,
            cross_fit=self.cross_fit if self.cross_fit is not None else self._cross_fit_may_apply(method, segmentation),
            prompt_init=self.prompt_init or self._default_prompt_init(method),
            device=resolve_device(self.device))
        cfg.precision = resolve_precision(self.precision, cfg.device)
        cfg.validate()
        cfg._check_half_backbone(method)
        if not _is_builtin(cfg.data) and not Path(cfg.data).exists():  # before any trial, search or folder
            raise ConfigError(f"data {self.data}: no such file or folder; give an image folder, a CSV, a VTAB-1k or "
                              f"FGVC split folder, images/ and masks/ folders, or a built-in name "
                              f"({', '.join((*BUILTIN_DATASETS, *SEGMENTATION_BUILTINS))})")
        check_output_outside_data(cfg.output, cfg.data)
        return cfg

    def _resolved_task(self) -> str:
        """`task` auto: segmentation when the data are (`is_segmentation_source`), else classification."""
        if self.task == "classification" and is_segmentation_source(self.data):
            raise ConfigError(f"task classification: {self.data} is segmentation data (a mask an image); leave out "
                              f"--task, or give classification data")
        if self.task != AUTO:
            return self.task
        return "segmentation" if is_segmentation_source(self.data) else "classification"

    def _check_segmentation(self, method: Method) -> None:
        """What a segmentation task cannot take, refused before anything starts."""
        if builtin_name(self.data) is not None:
            raise ConfigError(f"task segmentation: {self.data} is a classification data set; give images with masks "
                              f"(e.g. --data {SEGMENTATION_BUILTINS[0]}, or a folder with images/ and masks/)")
        if method.name == "da-vpt":
            raise ConfigError("method da-vpt guides prompts toward each image's one class, which a segmentation task "
                              "has not; use vpt-deep, e2vpt, vfpt or gated-vpt")
        if self.head_init not in (None, "random") or self.head_norm:
            raise ConfigError("head_init and head_norm shape a [CLS] classifier's head; a segmentation head starts "
                              "random with its own BatchNorm: leave out --head-init and --head-norm")
        if self.pooling != "cls":
            raise ConfigError("pooling chooses what a classifier's head reads; a segmentation head reads every image "
                              "token: leave out --pooling")
        if self.cross_fit:
            raise ConfigError("cross_fit fits linear probes on [CLS] features, which a segmentation task has not: "
                              "leave out --cross-fit")
        if self.recipe != "vtab" or self.protocol != "vtab1k":
            raise ConfigError("recipe and protocol are classification's (augmentation, built-in splits); a "
                              "segmentation task trains with random scale, crop and flip of image and mask on its own "
                              "splits: leave out --recipe and --protocol")

    def _check_half_backbone(self, method: Method) -> None:
        if not self.half_backbone:
            return
        if self.precision not in ("bf16", "fp16"):
            raise ConfigError(f"half_backbone needs precision bf16 or fp16 (the backbone's 16-bit weights are used "
                              f"under autocast), but the precision is {self.precision} on {self.device}; add "
                              f"--precision bf16, or leave out --half-backbone")
        if not method.frozen_backbone:
            raise ConfigError(f"half_backbone holds frozen weights in 16 bits, but method {self.method!r} trains "
                              f"backbone weights; leave out --half-backbone")

    def _cross_fit_may_apply(self, method: Method, segmentation: bool) -> bool | None:
        """cross_fit's default before the data is read: None (decided from the training set's size when training
        starts, `loop.with_cross_fit`) where a probe-started head on a frozen backbone may have fitted every
        training image; else False (a head lr of one's own asks for a learned head)."""
        probe_head = (self.head_init or method.head_init) == "probe" and self.head_lr in (None, method.default_head_lr)
        if segmentation or method.head_only or not method.frozen_backbone or not probe_head:
            return False
        return None

    def _default_prompt_init(self, method: Method) -> str:
        prompts_are_tokens = self.prompt_location == "prepend" and not self.prompt_project
        return method.prompt_init if prompts_are_tokens or method.prompt_init != "patches" else "xavier"

    # ------------------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ConfigError naming the setting and what it accepts."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, hints[f.name])
            choices = f.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")
        for name in ("epochs", "batch_size", "max_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if isinstance(self.num_tokens, str) and self.num_tokens != AUTO:
            raise ConfigError(f"num_tokens must be a whole number >= 0 or {AUTO!r}, got {self.num_tokens!r}")
        if isinstance(self.lr, str) and self.lr != AUTO:
            raise ConfigError(f"lr must be a positive number or {AUTO!r}, got {self.lr!r}")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and value != AUTO and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.clip_grad is not None and not (self.clip_grad > 0 and math.isfinite(self.clip_grad)):
            raise ConfigError(f"clip_grad must be a positive number, got {self.clip_grad!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be a number from 0 up to (not including) 1, got "
                              f"{self.label_smoothing!r}")
        for name in ("weight_decay", "momentum", "warmup_epochs"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be a whole number from 0 to {MAX_SEED}, got {self.seed!r}")
        if self.min_steps is not None and self.min_steps < 1:
            raise ConfigError(f"min_steps must be a positive number of optimizer steps, got {self.min_steps!r}")
        for name in ("subset", "test_subset"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive number of images, got {getattr(self, name)!r}")
        if self.img_size is not None and not 1 <= self.img_size <= MAX_IMG_SIZE:
            raise ConfigError(f"img_size must be 1..{MAX_IMG_SIZE} pixels, got {self.img_size!r} (a ViT's cost grows "
                              f"with its square; 224 is the usual size)")
        if self.device != AUTO_DEVICE:
            check_device(self.device)
        most = max(64, os.cpu_count() or 1)  # each worker is a process holding a copy of the data set's index
        if self.num_workers != AUTO_DEVICE and (not isinstance(self.num_workers, int) or not 0 <= self.num_workers <= most):
            raise ConfigError(f"num_workers must be auto or a whole number from 0 to {most}, got {self.num_workers!r}")
        method = self.tuning_method()  # ConfigError for an unknown method name
        if self.cross_fit and method.name == "linear":
            raise ConfigError("cross_fit trains the tuned tensors against probes fitted without their batch; method "
                              "linear is the probe itself: leave out --cross-fit")
        try:  # ConfigError naming the bad prompt field, or what the method cannot do with these prompts
            # num_tokens auto is only known with the backbone: one token stands in for it here
            method.prompt_config(self.prompt_config(1 if self.num_tokens == AUTO else None))
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if (method.prunes and self.num_tokens != AUTO
                and self.num_tokens - pruned_count(self.num_tokens, self.prune_tokens) < 1):
            raise ConfigError(f"prune_tokens {self.prune_tokens:g} of num_tokens {self.num_tokens} prunes every prompt "
                              f"token; prune a smaller share, or use more tokens")

    # ------------------------------------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "settings") -> "TrainConfig":
        """Settings by name (dashes or underscores); unknown names are refused, naming `origin`."""
        if not isinstance(data, dict):
            raise ConfigError(f"{origin}: expected a mapping of setting: value, got {type(data).__name__}")
        data = {str(key).replace("-", "_"): value for key, value in data.items()}
        data = {RENAMED.get(key, key): value for key, value in data.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{origin}: unknown setting(s) {unknown}; known settings: {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _SettingsLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a list or mapping as a key: SafeLoader's own error names it
            if key_node.value in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: {key_node.value} is set twice; keep one")
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def read_settings(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file of `setting: value` lines, read safely (no Python tags)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: " + ("a folder; give a YAML file" if path.is_dir() else "no such file"))
    try:
        settings = yaml.load(path.read_text(), Loader=_SettingsLoader) or {}
    except ConfigError as err:
        raise ConfigError(f"--config {path} {err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"--config {path} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(settings, dict):
        raise ConfigError(f"--config {path}: expected a mapping of setting: value")
    return settings


def apply_resume_changes(cfg: TrainConfig, changes: dict[str, Any], finished_epochs: int,
                         selected: bool) -> TrainConfig:
    """The run's settings with the changes a resume may make; the others are refused, naming them. `selected`: the
    run chose its epoch in a selection run (RUN/selection), on the schedule it was given."""
    refused = sorted(name for name, value in changes.items()
                     if name not in RESUME_MAY_CHANGE and value != getattr(cfg, name, None))
    if refused:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in refused)
        allowed = ", ".join(f"--{name.replace('_', '-')}" for name in RESUME_MAY_CHANGE)
        raise ConfigError(f"--resume continues the run with its own config.yaml; {flags} would change it. Train a new "
                          f"run instead (another --output, or --overwrite); only {allowed} may differ on a resume")
    epochs = changes.get("epochs", cfg.epochs)
    if epochs != cfg.epochs and selected:
        raise ConfigError(f"--epochs {epochs}: this run refits to the epoch its selection run chose on a {cfg.epochs}-"
                          f"epoch schedule, which another number of epochs would change; train a new run with --epochs {epochs} "
                          f"(runs trained with --no-refit or --final can train on)")
    if isinstance(epochs, int) and epochs < finished_epochs:
        raise ConfigError(f"--epochs {epochs}: the run has already finished {finished_epochs} epochs; give at least "
                          f"that many")
    resumed = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if k in RESUME_MAY_CHANGE})
    resumed.validate()
    return resumed


def load_train_config(path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """Settings from a YAML file (if given), then `overrides` on top (what the command line's flags are)."""
    if path is None:
        return TrainConfig.from_dict(overrides)
    settings, origin = read_settings(path), f"--config {path}"
    try:  # the file's values alone first, so that an error in them names the file
        TrainConfig.from_dict(settings, origin).validate()
    except ConfigError as err:
        raise ConfigError(err if str(err).startswith(origin) else f"{origin}: {err}") from err
    return TrainConfig.from_dict({**settings, **overrides}, origin=origin)


def check_output_outside_data(output: str | os.PathLike, data: str, flag: str = "--output") -> None:
    """Runs written inside an image folder would look like one more class (or more images) to the next run."""
    if builtin_name(data) is not None or not Path(data).is_dir():
        return
    out, folder = Path(output).expanduser().resolve(), Path(data).resolve()
    if out == folder or folder in out.parents:
        raise ConfigError(f"output {output} is inside the data folder {data}: its files would be read as data by "
                          f"the next run; choose an {flag} outside {data}")


def _is_builtin(data: str) -> bool:
    """A built-in data set's name (classification or segmentation): no path to resolve or check."""
    return builtin_name(data) is not None or data in SEGMENTATION_BUILTINS


def _resolved_path(path: str) -> str:
    """An absolute path, so that config.yaml and task.json work from any directory (eval, --resume)."""
    return str(Path(path).expanduser().resolve())


def _check_type(name: str, value: Any, hint: Any) -> None:
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if kind in (int, str, bool) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return
        if typing.get_origin(kind) is list and isinstance(value, list) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            return
    expected = " or ".join(_type_name(kind) for kind in allowed)
    raise ConfigError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")


def _type_name(kind: Any) -> str:
    if kind is type(None):
        return "empty (null)"
    if typing.get_origin(kind) is list:
        return "a list of integers"
    return {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(kind, str(kind))


__all__ = ["TrainConfig", "load_train_config", "read_settings", "CACHE_STEM"]
