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

from vptune import PromptConfig, build_model, create_backbone, load_data
from vptune.model.prompted_vit import backbone_data_config
from vptune.training.linear_probe import choose_probe
from vptune.training.stem_cache import precompute


def probe_val(model, splits) -> float:
    model.eval()
    train, val = (precompute(model.forward_features, s, batch_size=64, device=torch.device("cpu")).tensors
                  for s in (splits.train, splits.val))
    _, rows = choose_probe(train, val, len(splits.class_names))
    return max(row["val_top1"] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits,animal-mnist,fashion-mnist")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    backbone = create_backbone(img_size=args.img_size)
    results = {}
    for data in args.data.split(","):
        config = backbone_data_config(backbone)
        splits = load_data(data, img_size=args.img_size, mean=config["mean"], std=config["std"], seed=0)
        classes = len(splits.class_names)
        torch.manual_seed(0)
        models = {init: build_model("vpt-deep", backbone, PromptConfig(num_tokens=10, init=init), classes)
                  for init in ("xavier", "patches")}
        models["no prompt"] = build_model("linear", backbone, PromptConfig(num_tokens=0), classes)
        generator = torch.Generator().manual_seed(0)
        picked = torch.randperm(len(splits.train), generator=generator)[:64].tolist()
        models["patches"].init_prompts_from_patches(torch.stack([splits.train[i][0] for i in picked]), generator)
        results[data] = {name: probe_val(model, splits) for name, model in models.items()}
        print(data, results[data], flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
