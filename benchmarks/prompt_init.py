"""How much do the initial prompts damage the frozen features? The converged linear probe's val top-1 on the [CLS]
features of the initial model: no prompt (the backbone's own features), VPT-deep with the paper's xavier-random
prompts, and with prompts drawn from the backbone's own patch tokens (`init="patches"`, the default).

    python benchmarks/prompt_init.py --data digits,animal-mnist,fashion-mnist --out docs/recipe/prompt_init.json

VTAB-1k splits (train800 / val200), 112 px, seed 0, p = 10 on every block of the default backbone.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from timm.data import resolve_model_data_config
from torch.utils.data import DataLoader, Subset

from vptune import PromptConfig, build_model, create_backbone, load_data
from vptune.training.linear_probe import choose_probe


@torch.no_grad()
def features(fn, dataset, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(images), labels) for every item of `dataset`, in order."""
    pairs = [(fn(images).float(), labels) for images, labels in DataLoader(dataset, batch_size=batch_size)]
    return torch.cat([f for f, _ in pairs]), torch.cat([y for _, y in pairs])


def probe_val(model, train, val, classes: int) -> float:
    model.eval()
    train, val = (features(model.forward_features, s) for s in (train, val))
    _, rows = choose_probe(train, val, classes)
    return max(row["val_top1"] for row in rows)


INITS = ("no prompt", "xavier", "patches")  # the table's columns: val top-1 of the probe on each model's features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits,animal-mnist,fashion-mnist")
    parser.add_argument("--backbone", default="dinov2-s14-imgfocus")
    parser.add_argument("--weights", default=None, help="local weights for the backbone (offline use of a timm ViT)")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--images", type=int, default=None, help="at most N train and N val images per task (a "
                                                                     "quick check; default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    backbone = create_backbone(args.backbone, img_size=args.img_size, weights=args.weights)
    results = {}
    print("| data | " + " | ".join(INITS) + " |", flush=True)
    print("|---|" + "---|" * len(INITS), flush=True)
    config = resolve_model_data_config(backbone)  # the backbone's mean and std
    for data in args.data.split(","):
        splits = load_data(data, img_size=args.img_size, mean=config["mean"], std=config["std"], seed=0)
        classes = len(splits.class_names)
        train, val = (Subset(s, range(min(len(s), args.images or len(s)))) for s in (splits.train, splits.val))
        torch.manual_seed(0)
        models = {init: build_model("vpt-deep", backbone, PromptConfig(num_tokens=10, init=init), classes)
                  for init in ("xavier", "patches")}
        models["no prompt"] = build_model("linear", backbone, PromptConfig(num_tokens=0), classes)
        generator = torch.Generator().manual_seed(0)
        picked = torch.randperm(len(train), generator=generator)[:64].tolist()
        models["patches"].init_prompts_from_patches(torch.stack([train[i][0] for i in picked]), generator)
        results[data] = {name: probe_val(model, train, val, classes) for name, model in models.items()}
        print(f"| {data} | " + " | ".join(f"{results[data][name]:.3f}" for name in INITS) + " |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
