"""`vptune` command line: a thin layer over the library (train, eval, predict, info, demo, bench)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from .train import TrainConfig

# Flag help for every training setting; flags left out fall back to --config, then to TrainConfig's defaults.
TRAIN_FLAGS: dict[str, tuple[type, str]] = {
    "data": (str, "built-in data set (digits, fashion-mnist, animal-mnist) or a path: image folder, CSV, "
                  "VTAB-1k list folder, FGVC json folder"),
    "output": (str, "task directory to write (default runs/task)"),
    "method": (str, "vpt-deep, vpt-shallow, linear, full, bias, partial-K (e.g. partial-2), lora"),
    "backbone": (str, "dinov2-s14-imgfocus (offline default) or a timm ViT name"),
    "weights": (str, "local .safetensors/.pth weights for the backbone (offline use of any timm ViT)"),
    "img_size": (int, "input size in pixels (default: the backbone's, 224)"),
    "num_tokens": (int, "prompt length p (default 10)"),
    "prompt_layers": (str, "blocks with a prompt: all, 'first K', 'last K' or indices '0,1,5' (default: mode's)"),
    "prompt_location": (str, "prepend (default) or add"),
    "prompt_dropout": (float, "prompt dropout (default 0)"),
    "prompt_project": (int, "prompt projection dim (default: none)"),
    "lora_rank": (int, "LoRA rank for --method lora (default 8)"),
    "protocol": (str, "vtab1k (train800/val200/test, default) or full"),
    "recipe": (str, "augmentation: vtab (plain resize, default) or fgvc (random crop + flip)"),
    "subset": (int, "use at most N images per split (quick checks)"),
    "num_workers": (int, "data loader workers (default 0)"),
    "cache_frozen": (str, "auto (default): run the frozen blocks before the first prompt once per image, not "
                          "every epoch, when the recipe has no random augmentation and it fits in memory; off"),
    "epochs": (int, "epochs (default 10)"),
    "batch_size": (int, "batch size (default 32)"),
    "optimizer": (str, "sgd (default for VPT and linear) or adamw (default for full, bias, partial, lora)"),
    "lr": (float, "base lr of the tuned tensors, scaled by batch/256 (default 0.5 SGD, 1e-3 AdamW)"),
    "head_lr": (float, "base lr of the head, scaled by batch/256 (default 0.02 VPT, 0.08 linear, 1e-3 AdamW)"),
    "weight_decay": (float, "weight decay (default 1e-4)"),
    "momentum": (float, "SGD momentum (default 0.9)"),
    "warmup_epochs": (float, "linear warm-up epochs before cosine decay (default 1)"),
    "seed": (int, "random seed (default 0); same seed, same metrics on CPU"),
    "device": (str, "cpu (default) or cuda"),
}
TRAIN_SWITCHES = {"final": "train on train+val and report test (VTAB-1k's final run; no model selection)",
                  "skip_bad": "skip unreadable images with a warning instead of stopping",
                  "grad_checkpointing": "recompute the frozen blocks in the backward pass: about a fifth of the "
                                        "training memory for about 1.4x the step time (large backbones/batches)",
                  "no_scale_lr": "do not scale learning rates by batch/256"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("vptune: interrupted; finished epochs are saved (continue with vptune train --resume DIR)",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, OSError, ImportError) as err:
        print(f"vptune: error: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vptune", description="Visual Prompt Tuning for frozen Vision Transformers")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="train a task (VPT or a baseline) into a task directory")
    train.add_argument("--config", type=Path, help="YAML file of settings (flags given here win)")
    train.add_argument("--resume", type=Path, metavar="TASK_DIR", help="continue an interrupted run")
    train.add_argument("--overwrite", action="store_true", help="replace an existing task directory")
    train.add_argument("--quiet", action="store_true",
                       help="no progress bars or log lines: only the final result (and errors)")
    for name, (kind, text) in TRAIN_FLAGS.items():
        train.add_argument(f"--{name.replace('_', '-')}", type=kind, default=argparse.SUPPRESS, help=text)
    for name, text in TRAIN_SWITCHES.items():
        train.add_argument(f"--{name.replace('_', '-')}", action="store_true", default=argparse.SUPPRESS, help=text)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("eval", help="evaluate a task: top-1/top-5, per class, confusion matrix PNG")
    evaluate.add_argument("task", type=Path, help="task directory (a training run or a task checkpoint)")
    evaluate.add_argument("--data", help="data set to evaluate on (default: the one it was trained on)")
    evaluate.add_argument("--split", default="test", choices=["test", "val", "train", "trainval"])
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(run=_eval)

    predict = commands.add_parser("predict", help="top-k classes of images")
    predict.add_argument("task", type=Path)
    predict.add_argument("images", type=Path, nargs="+")
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.set_defaults(run=_predict)

    info = commands.add_parser("info", help="prompt config, trainable parameters, checkpoint size")
    info.add_argument("target", help="task directory, or a backbone name")
    info.set_defaults(run=_info)

    demo = commands.add_parser("demo", help="linear probe vs VPT-shallow vs VPT-deep on the offline default")
    demo.add_argument("--output", type=Path, default=Path("runs/demo"))
    demo.add_argument("--data", default=None, help="built-in data set (default animal-mnist)")
    demo.add_argument("--epochs", type=int, default=None)
    demo.add_argument("--smoke", action="store_true", help="a tiny, fast run of the same pipeline (for CI)")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_demo)

    bench = commands.add_parser("bench", help="speed and memory: frozen backbone vs reference vs fast path",
                                add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(run=_bench)
    return parser


# ---------------------------------------------------------------------------------------------- commands
def _train(args: argparse.Namespace) -> int:
    from .train import train

    if args.resume is not None:
        train(TrainConfig(output=str(args.resume)), resume=True, quiet=args.quiet)
        return 0
    settings = {}
    if args.config is not None:
        if not args.config.is_file():
            raise ValueError(f"--config {args.config}: no such file")
        settings = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(settings, dict):
            raise ValueError(f"--config {args.config}: expected a mapping of setting: value")
    flags = {k: v for k, v in vars(args).items() if k in TRAIN_FLAGS or k in TRAIN_SWITCHES}
    if flags.pop("no_scale_lr", False):
        flags["scale_lr"] = False
    if isinstance(flags.get("prompt_layers"), str):
        flags["prompt_layers"] = _layers_flag(flags["prompt_layers"])
    cfg = TrainConfig.from_dict({**settings, **flags}, origin=str(args.config or "flags"))
    summary = train(cfg, overwrite=args.overwrite, quiet=args.quiet)
    print(f"task written to {cfg.output}: test top-1 {summary['test_top1']:.4f}" if summary["test_top1"] is not None
          else f"task written to {cfg.output}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import format_metrics
    from .serve import evaluate_task

    metrics, names, written = evaluate_task(args.task, data=args.data, split=args.split, batch_size=args.batch_size,
                                            device=args.device, quiet=args.quiet)
    print(format_metrics(metrics, names))
    print(f"\nwritten: {', '.join(str(p) for p in written)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .serve import Predictor

    results = Predictor.from_task(args.task).predict_files(args.images, top_k=args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(result["image"])
        for guess in result["top"]:
            print(f"  {guess['probability']:7.2%}  {guess['class']}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .serve import describe

    print(describe(args.target))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.output, data=args.data, epochs=args.epochs, smoke=args.smoke, quiet=args.quiet)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args.bench_args)


def _layers_flag(text: str):
    """'0,1,5' -> [0, 1, 5]; anything else ('all', 'first 4', 'last 2') is passed on as words."""
    parts = [p.strip() for p in text.split(",")]
    return [int(p) for p in parts] if all(p.lstrip("-").isdigit() for p in parts) else text


if __name__ == "__main__":
    sys.exit(main())
