"""What is measured: the models (`MODELS`), one measured config (`Config`), the groups timed side by side
(`grid`), and what each figure is divided by (`bases_of`)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from ..methods import build_model
from ..model import PromptConfig, PromptedModel, adapter_for

if TYPE_CHECKING:  # type hints only: settings.py imports this file
    from .settings import BenchSettings


@dataclass(frozen=True)
class ModelSpec:
    """A benchmarked backbone, and its defaults when --repeats / --modes are not given."""

    timm_name: str
    kwargs: dict
    repeats: int = 3
    modes: tuple[str, ...] = ("deep", "shallow")


# ViT-B/16 gets fewer repeats and deep prompts only by default: a CPU training step costs ~3x ViT-S/14's, and
# the default run should stay near 15 minutes on 2 cores (pass --modes / --repeats for the full grid).
MODELS = {
    "vit-s14": ModelSpec("vit_small_patch14_dinov2", {"img_size": 224}),
    "vit-b16": ModelSpec("vit_base_patch16_224", {}, repeats=1, modes=("deep",)),
    # timm's Eva family: rotary positions, 4 register tokens, LayerScale (DINOv3-S/16's shape, random weights)
    "dinov3-s16": ModelSpec("vit_small_patch16_dinov3", {"img_size": 224}),
    "tiny": ModelSpec("vit_tiny_patch16_224", {"img_size": 32, "depth": 2, "embed_dim": 32, "num_heads": 2}, 1),
    # windowed backbones without [CLS] (the head reads the mean of the final tokens): Swin-T (shifted windows of
    # 7, patch merging) and SAM-B's encoder shape at 224 px (windows of 14 = one window per block there)
    "swin-t": ModelSpec("swin_tiny_patch4_window7_224", {}),
    "sam-b": ModelSpec("samvit_base_patch16_224", {}, repeats=1, modes=("deep",)),
    "tiny-swin": ModelSpec("swin_tiny_patch4_window7_224", {"img_size": 32, "embed_dim": 16, "depths": (1, 1, 2, 1),
                                                            "num_heads": (1, 1, 2, 2), "window_size": 2}, 1),
}
# floor: no prompt (linear probe); tokens: the reference; prefix: the fast path; -ckpt: gradient checkpointing
PATHS = ("floor", "tokens", "prefix", "prefix-ckpt", "tokens-ckpt")
PRECISIONS = ("fp32", "bf16", "fp16")  # fp32, or autocast to a 16-bit type (vptune.devices)
FIGURES = ("train_step_s", "train_peak_mb", "infer_ips", "infer_b1_ips")
BASES = ("ref", "floor", "fp32_eager", "vpt_deep")  # what each figure is also given as a ratio to (`bases_of`)
# prompt methods since VPT, measured as a "mode" beside VPT-deep (`--methods`): a mode names the method it builds
METHOD_MODES = ("e2vpt", "vfpt", "gated-vpt", "da-vpt")
DEFAULTS = {"models": ["vit-s14", "vit-b16"], "prompts": [10, 50, 100, 200], "batch": 32, "threads": None}
QUICK = {"models": ["tiny"], "prompts": [2, 4], "batch": 4, "train_batch": 2, "repeats": 1, "threads": 1}
NUM_CLASSES = 100
B1_CALLS = 8  # batch-1 inference: images per timed repeat
SETTLE_ROUNDS = 5  # at most, untimed rounds of compiled configs before a figure's timed rounds (settle_compiled)


@dataclass(frozen=True)
class Config:
    """One measured model: the floor has mode "" and prompts 0. `precision` is fp32 or the autocast type;
    `compiled` runs the forward through `torch.compile`; `head` "linear" or "pup" makes it a segmenter (its
    floor: that head on the frozen backbone)."""

    model: str
    mode: str
    prompts: int
    path: str
    precision: str = "fp32"
    compiled: bool = False
    head: str = ""

    def build(self, backbone: torch.nn.Module, device: str) -> PromptedModel:
        pooling = "cls" if adapter_for(backbone).has_class_token else "image-pool"  # the backbone's own
        prompt = PromptConfig(num_tokens=self.prompts, pooling="cls" if self.head else pooling)
        method = "linear" if not self.prompts else self.mode if self.mode in METHOD_MODES else f"vpt-{self.mode}"
        model = build_model(method, backbone, prompt, NUM_CLASSES, segmentation_head=self.head or None)
        model.path = "prefix" if self.path == "floor" else self.path.split("-")[0]
        model.grad_checkpointing = self.path.endswith("-ckpt")
        return model.to(device)

    def label(self) -> str:
        where = f" {self.mode} p={self.prompts}" if self.prompts else ""
        head = f" {self.head} head" if self.head else ""
        return f"{self.path}{where}{head} {self.precision}{' compiled' if self.compiled else ''}"


def bases_of(cfg: Config) -> dict[str, Config | None]:
    """The configs each of cfg's figures is divided by: the reference path and the floor in the same precision
    and compile setting, and the same config in fp32 eager (what the 16-bit and compiled variants gain)."""
    return {"ref": replace(cfg, path="tokens") if cfg.path != "floor" else None,
            "floor": replace(cfg, mode="", prompts=0, path="floor"),
            "fp32_eager": replace(cfg, precision="fp32", compiled=False),
            "vpt_deep": replace(cfg, mode="deep") if cfg.mode in METHOD_MODES else None}


def spec_of(alias: str) -> ModelSpec:
    return MODELS.get(alias) or ModelSpec(alias, {})


def variants(args: "BenchSettings") -> list[tuple[str, bool]]:
    """(precision, compiled) pairs measured: every precision eagerly, and compiled too with --compile."""
    return [(p, compiled) for compiled in ((False, True) if args.compile else (False,)) for p in args.precisions]


def grid(args: "BenchSettings", alias: str, first: int) -> dict[int, list[Config]]:
    """Groups measured side by side, numbered from `first`: at one (mode, p), the floor and every path, each in
    every variant (the variants of one path next to each other, as the table lists them); with --heads, the
    groups once for each segmentation head."""
    kinds = variants(args)
    paths = [path for path in args.paths if path != "floor"]
    groups = []
    for head in args.heads or [""]:
        floors = [Config(alias, "", 0, "floor", p, c, head) for p, c in kinds]
        if args.methods:  # one group per p: VPT-deep and each method take turns, for the "x vpt-deep" ratios
            modes = [*(args.modes or ["deep"]), *args.methods]
            groups += [floors + [Config(alias, mode, n, path, p, c, head) for mode in modes for path in paths
                                 for p, c in kinds] for n in args.prompts]
        else:
            groups += [floors + [Config(alias, mode, n, path, p, c, head) for path in paths for p, c in kinds]
                       for mode in args.modes or spec_of(alias).modes for n in args.prompts]
    return dict(enumerate(groups, start=first))
