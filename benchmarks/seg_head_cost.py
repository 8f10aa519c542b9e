"""What a segmentation head costs a VPT-deep training step: the linear head against SETR-PUP at several widths,
one step each in turns (so a drift of the machine's speed hits every head alike), the median of the rounds.

    python benchmarks/seg_head_cost.py                           # the default backbone at 112 px, batch 32
    python benchmarks/seg_head_cost.py --widths 96,256 --rounds 5

Behind docs/performance.md's "Segmentation" table (PUP's default width is a quarter of the backbone's; SETR's
256 channels were ViT-L's). Run it with nothing else on the machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vptune import PromptConfig, create_backbone
from vptune.model import PromptedSegmenter, pup_channels


def training_step(model: PromptedSegmenter, images: torch.Tensor, masks: torch.Tensor) -> float:
    """Seconds for one forward and backward pass (the optimizer's step is the same small update for every head)."""
    start = time.perf_counter()
    F.cross_entropy(model(images), masks).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="dinov2-s14-imgfocus")
    parser.add_argument("--weights", default=None, help="a local weights file for --backbone")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--prompts", type=int, default=10, help="VPT-deep's p")
    parser.add_argument("--widths", default="256", help="PUP widths measured beside the default (comma list)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    backbone = create_backbone(args.backbone, img_size=args.img_size, weights=args.weights)
    prompt = PromptConfig(num_tokens=args.prompts)
    default_width = pup_channels(backbone.embed_dim)
    widths = [default_width] + [int(w) for w in args.widths.split(",") if w and int(w) != default_width]
    heads = {"linear": PromptedSegmenter(backbone, prompt, args.classes, head="linear").train()}
    for width in widths:
        heads[f"pup, {width} channels"] = PromptedSegmenter(backbone, prompt, args.classes, head="pup",
                                                           head_channels=width).train()
    images = torch.randn(args.batch, 3, args.img_size, args.img_size)
    masks = torch.randint(0, args.classes, (args.batch, args.img_size, args.img_size))
    seconds: dict[str, list[float]] = {name: [] for name in heads}
    for model in heads.values():  # warm-up
        training_step(model, images, masks)
    for _ in range(args.rounds):
        for name, model in heads.items():
            seconds[name].append(training_step(model, images, masks))

    base = statistics.median(seconds["linear"])
    print(f"{args.backbone} at {args.img_size} px, VPT-deep p = {args.prompts}, batch {args.batch}, "
          f"{args.rounds} rounds in turns, median")
    print("| head | s / step | x linear head | head parameters |")
    print("|---|---|---|---|")
    for name, model in heads.items():
        step = statistics.median(seconds[name])
        params = sum(p.numel() for p in model.head.parameters())
        print(f"| {name} | {step:.2f} | {step / base:.2f} | {params:,} |")


if __name__ == "__main__":
    main()
