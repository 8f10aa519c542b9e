"""`vptune` command line: argparse over the library (train, sweep, ablate, eval, predict, info, demo, bench), no logic of
its own.

The project's own errors (bad settings, data, checkpoints, run folders: `vptune.errors.VptuneError`) print as one
line; anything else is a bug in vptune and prints its traceback. `--debug` (or VPTUNE_DEBUG=1) shows the
traceback for every error.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import traceback
import types
import typing
import warnings
from pathlib import Path

from .data import MAX_PIXELS, DataWarning
from .errors import ConfigError, VptuneError
from .inference.evaluate import SPLITS
from .experiments.ablate import SETS as ABLATION_SETS
from .experiments.ablate import ablate_help
from .experiments.sweep import SEARCHABLE, sweep_help
from .methods import method_summaries
from .training import TrainConfig
from .training.objective import SCORE_NAMES

log = logging.getLogger("vptune")
# what Ctrl-C leaves, by command: the long ones keep their finished work and say how to go on
AFTER_INTERRUPT = {
    "train": "; finished epochs are saved (continue with vptune train --resume DIR)",
    "sweep": "; finished trials are in the study (run the same command again to go on)",
    "ablate": "; finished runs are in OUT/runs.jsonl (run the same command again: the one under way resumes "
              "from its last epoch)",
    "demo": "; run vptune demo again to start it over",
}
_python_show_warning = warnings.showwarning  # the standard format, for warnings that are not vptune's


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:  # also after --help's SystemExit: the output is flushed here, where a closed pipe can be caught
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader has gone (`vptune eval RUN | head -1`) and has what it wanted: end quietly with the status of
        # a tool killed by SIGPIPE. Output still buffered goes to devnull, so Python's own flush at exit cannot
        # fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False) or os.environ.get("VPTUNE_DEBUG", "") not in ("", "0")
    _configure_logging(quiet=getattr(args, "quiet", False))
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print(f"vptune: interrupted{AFTER_INTERRUPT.get(args.command, '')}", file=sys.stderr)
        return 130
    except VptuneError as err:
        if debug:
            traceback.print_exc()
        one_line = " ".join(line.strip() for line in str(err).splitlines() if line.strip())  # a quoted library
        print(f"vptune: error: {one_line}", file=sys.stderr)  # message may span lines; the user's error does not
        return 1


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of every error (also VPTUNE_DEBUG=1)")
    # allow_abbrev=False: "--seed 3" to `ablate` must not quietly mean its "--seeds 3"
    parser = argparse.ArgumentParser(prog="vptune", parents=[common], allow_abbrev=False,
                                     description="Visual Prompt Tuning for frozen Vision Transformers")
    parser.add_argument("--version", action="version", version=_versions())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, run, **kwargs) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, parents=[common], allow_abbrev=False, **kwargs)
        sub.set_defaults(run=run)
        return sub

    train = command("train", "train a task (VPT or a baseline) into a run directory", _train,
                    epilog="methods:\n" + method_summaries(), formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", type=Path, help="YAML file of settings (flags given here win)")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--quiet", action="store_true", help="no progress bars or log lines: only the result")
    add_config_flags(train, TrainConfig)

    sweep = command("sweep", "search learning rates (and more) on Optuna, retrain the best with several seeds",
                    _sweep, description=sweep_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("--config", type=Path, help="YAML: training settings, and a `sweep:` mapping of the options "
                                                   "below (space: {lr: [...]}, sampler, trials, ...); flags win")
    sweep.add_argument("--quiet", action="store_true", help="warnings only")
    for name in SEARCHABLE:
        sweep.add_argument(f"--{name.replace('_', '-')}", default=argparse.SUPPRESS,
                           help="values to search: a,b,c (grid or TPE) or log:LOW:HIGH (TPE)")
    sweep.add_argument("--sampler", default=argparse.SUPPRESS, help="grid (default) or tpe")
    sweep.add_argument("--trials", type=int, default=argparse.SUPPRESS, help="number of trials (TPE)")
    sweep.add_argument("--pruner", default=argparse.SUPPRESS, help="hyperband (default), halving or none")
    sweep.add_argument("--storage", default=argparse.SUPPRESS,
                       help="Optuna RDB URL shared by workers on many machines (default: a journal file in the "
                            "sweep's output folder)")
    sweep.add_argument("--study", default=argparse.SUPPRESS, help="study name in the storage (default vptune)")
    sweep.add_argument("--workers", type=int, default=argparse.SUPPRESS,
                       help="local worker processes, each with its share of the cores (default 1)")
    sweep.add_argument("--seeds", default=argparse.SUPPRESS, help="retrain seeds on train + val (default 0,1,2; "
                                                                  "'none' skips the retrain)")
    add_config_flags(sweep, TrainConfig, skip=SEARCHABLE)

    ablate = command("ablate", "rerun one of the paper's comparisons (claims, methods, location, depth, length, "
                               "pooling, init, recipes) on tasks and seeds: runs file, tables, plots", _ablate,
                     description=ablate_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    ablate.add_argument("set", choices=list(ABLATION_SETS), help="the comparison to run")
    ablate.add_argument("--tasks", action="append", metavar="TASKS",
                        help="comma-separated built-in names or data paths (default: the three built-ins); may be "
                             "given again, and a data path with a comma in its name is taken whole")
    ablate.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ablate.add_argument("--out", default="runs/ablate", help="folder for runs.jsonl and the reports, shared by "
                                                             "every set (default runs/ablate)")
    ablate.add_argument("--cells", default=None, help="run only these cells of the set, comma-separated (default: "
                                                      "all; see --plan)")
    only_look = ablate.add_mutually_exclusive_group()
    only_look.add_argument("--plan", action="store_true", help="list the cells and the runs still to do, then stop")
    only_look.add_argument("--report", action="store_true", help="rewrite the set's tables and plot from the runs "
                                                              "--out holds, training nothing")
    ablate.add_argument("--quiet", action="store_true", help="warnings only")
    add_config_flags(ablate, TrainConfig, skip=("data", "output", "seed"))

    evaluate = command("eval", "evaluate a task: top-1/top-5, per class, confusion matrix PNG", _eval)
    evaluate.add_argument("task", type=Path, help="task directory (a training run or a task checkpoint)")
    evaluate.add_argument("--data", help="data set to evaluate on (default: the one it was trained on)")
    evaluate.add_argument("--split", default="test", choices=SPLITS)
    evaluate.add_argument("--batch-size", type=int, default=64)
    add_runtime_flags(evaluate)
    evaluate.add_argument("--quiet", action="store_true")
    add_download_flag(evaluate)

    predict = command("predict", "top-k classes of images", _predict)
    predict.add_argument("task", type=Path, help="a task directory or a training run")
    predict.add_argument("images", type=Path, nargs="+", help="image files, or folders of them (searched recursively)")
    predict.add_argument("--top-k", type=int, default=None, help="how many classes to list per image (default 5; "
                                                                  "a classification task's)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.add_argument("--output", type=Path, default=None,
                         help="a segmentation task: the folder for each image's mask PNG (class indices, palette) and "
                              "overlay JPEG (default: masks/ here; existing files are never overwritten)")
    predict.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                         help=f"refuse images with more pixels than this (default {MAX_PIXELS:,})")
    predict.add_argument("--skip-bad", action="store_true",
                         help="leave unreadable images out with a warning (default: every image is checked first, "
                              "and a bad one stops before any prediction)")
    add_runtime_flags(predict)
    add_download_flag(predict)

    serve = command("serve", "serve many tasks on one backbone over HTTP (needs the serve extra)", _serve)
    serve.add_argument("--task", action="append", default=[], metavar="NAME=DIR", required=True,
                       help="a task to serve under NAME (a task directory or a training run); repeat for more")
    add_serve_flags(serve)
    add_download_flag(serve)

    info = command("info", "method, prompt config, trainable parameters, checkpoint size", _info)
    info.add_argument("target", help="task directory, or a backbone name")

    demo = command("demo", "linear probe vs VPT-shallow vs VPT-deep on the offline default (--segmentation: by mIoU)",
                   _demo)
    demo.add_argument("--output", type=Path, default=Path("runs/demo"))
    demo.add_argument("--data", default=None, help="built-in data set (default animal-mnist; with --segmentation: "
                                                   "pasted-animals, or surface-defects)")
    demo.add_argument("--epochs", type=int, default=None)
    demo.add_argument("--smoke", action="store_true", help="a tiny, fast run of the same pipeline (for CI)")
    demo.add_argument("--segmentation", action="store_true",
                      help="linear head vs VPT-shallow vs VPT-deep on the built-in segmentation task (pasted-animals), "
                           "by mIoU")
    demo.add_argument("--quiet", action="store_true")

    bench = command("bench", "speed and memory: frozen backbone vs reference vs fast path", _bench,
                    description=bench_help())
    add_bench_flags(bench)
    return parser


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """--device, --precision and --compile of an inference command (`eval`, `predict`); `serve` takes the first
    two from ServeSettings, with the same help."""
    from .devices import PRECISIONS
    from .inference.runtime import COMPILE_HELP, DEVICE_HELP, PRECISION_HELP

    parser.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default auto)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help=f"{PRECISION_HELP} (default auto)")
    parser.add_argument("--compile", action="store_true", help=COMPILE_HELP)


def add_download_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-download", action="store_true",
                        help="fetch the backbone a task names if it is not on this machine (without it, a task "
                             "folder from elsewhere makes vptune download nothing)")


def bench_help() -> str:
    from .bench import __doc__ as doc

    return doc.split("\n\n")[0]


def add_bench_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `BenchSettings` field: lists as comma lists, booleans as switches (`--no-memory`)."""
    from .bench import BenchSettings

    hints = typing.get_type_hints(BenchSettings)
    for field in dataclasses.fields(BenchSettings):
        flag, text = field.name.replace("_", "-"), field.metadata["help"]
        hint = hints[field.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = [t for t in (typing.get_args(hint) if union else (hint,)) if t is not type(None)]
        if kinds == [bool]:
            on = field.default is not True
            parser.add_argument(f"--{flag}" if on else f"--no-{flag}", dest=field.name, action="store_const",
                                const=on, default=argparse.SUPPRESS, help=text)
        elif typing.get_origin(kinds[0]) is list:
            item = typing.get_args(kinds[0])[0]
            parser.add_argument(f"--{flag}", type=_typed_list(item, f"--{flag}"), default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(f"--{flag}", type=kinds[0] if kinds[0] in (int, float, Path) else str,
                                default=argparse.SUPPRESS, help=text)


def _typed_list(kind: type, flag: str):
    """argparse type: a comma list of `kind` values."""
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in _comma_list(text, flag)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a comma list of {kind.__name__} values, got {text!r}") from None
    return parse


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    from .inference.server import ServeSettings

    hints = typing.get_type_hints(ServeSettings)
    for field in dataclasses.fields(ServeSettings):
        text = field.metadata["help"]
        kind = next(t for t in (typing.get_args(hints[field.name]) or (hints[field.name],)) if t is not type(None))
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=field.default,
                            choices=field.metadata.get("choices"),
                            help=text if field.default is None else f"{text} (default {field.default})")


def add_config_flags(parser: argparse.ArgumentParser, config: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per dataclass field, with the field's help: `--name VALUE`, or a switch for booleans (`--name`
    when the default is off, `--no-name` when it is on). Flags not given stay unset, so a config file fills them."""
    hints = typing.get_type_hints(config)
    for field in dataclasses.fields(config):
        if field.name in skip:
            continue
        flag = field.name.replace("_", "-")
        text = field.metadata.get("help", "")
        if bool in (typing.get_args(hints[field.name]) or (hints[field.name],)):
            if field.default is not True:  # off, or None: the default is someone else's (e.g. the method's)
                parser.add_argument(f"--{flag}", action="store_true", default=argparse.SUPPRESS, help=text)
            else:  # on by default: its flag says so where another default applies (`ablate --refit`)
                parser.add_argument(f"--{flag}", action="store_true", default=argparse.SUPPRESS,
                                    help=f"{text} (default)")
            if field.default is not False:
                parser.add_argument(f"--no-{flag}", dest=field.name, action="store_false",
                                    default=argparse.SUPPRESS, help=f"do not {text}" if field.default else
                                    "off (by default the method or the data decides)")
            continue
        choices = field.metadata.get("choices")
        shown = f"{text}; one of {', '.join(choices)}" if choices else text
        if field.default is not None:
            shown += f" (default {field.default})"
        parser.add_argument(f"--{flag}", type=_scalar_type(hints[field.name]), default=argparse.SUPPRESS,
                            help=shown)


def _scalar_type(hint):
    """What a flag's text converts to: the first of int, float, str that the annotation allows; a number or a
    word (e.g. --lr auto) when it allows both."""
    allowed = typing.get_args(hint) or (hint,)
    kind = next(kind for kind in (int, float, str) if kind in allowed)
    if kind in (int, float) and str in allowed:
        return lambda text: _number_or_word(text, kind)
    return kind


def _number_or_word(text: str, kind: type = float) -> float | int | str:
    try:
        return kind(text)
    except ValueError:
        return text


def _versions() -> str:
    """What a bug report needs: vptune's version and those of the libraries its numbers depend on."""
    from importlib.metadata import version

    import torch

    from ._io import package_version

    python = sys.version.split()[0]
    return f"vptune {package_version()} (torch {torch.__version__}, timm {version('timm')}, python {python})"


def _configure_logging(quiet: bool) -> None:
    """Log lines of the "vptune" logger to stderr, as plain messages; --quiet keeps warnings only."""
    for handler in [h for h in log.handlers if getattr(h, "vptune_cli", False)]:
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.vptune_cli = True
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """vptune's own warnings (about the user's data) as one plain line; other libraries' keep Python's format,
    with the file and line that a bug report needs."""
    if issubclass(category, DataWarning):
        print(f"vptune: warning: {message}", file=file or sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


# ---------------------------------------------------------------------------------------------- commands
def _train(args: argparse.Namespace) -> int:
    from .training import load_train_config, train

    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if args.resume is not None:
        if args.config is not None or args.overwrite:
            raise ConfigError("--resume continues a run with its own config.yaml: leave out --config and --overwrite")
        if flags.get("output") == str(args.resume):
            del flags["output"]
        summary = train(TrainConfig(output=str(args.resume)), resume=True, quiet=args.quiet, changes=flags)
        _report(args.resume, summary)
        return 0
    cfg = load_train_config(args.config, **flags)
    unused = cfg.unused_by_method(flags)  # flags typed here; a shared settings file may hold others' settings
    if unused:  # a warning, not an error: the run is valid, the flag only does nothing
        named = ", ".join("--" + name.replace("_", "-") for name in unused)
        log.warning(f"vptune: warning: --method {cfg.method} does not read {named}, so the run is the same without "
                    f"{'it' if len(unused) == 1 else 'them'} (prompt settings are for vpt-deep and vpt-shallow, "
                    f"--lora-rank for lora)")
    fixed_head = [name for name in ("head_init", "head_lr") if cfg.cross_fit and name in flags]
    if fixed_head:  # the same kind of warning: each step's head is a fitted probe, neither started nor learned
        named = " and ".join("--" + name.replace("_", "-") for name in fixed_head)
        log.warning(f"vptune: warning: --cross-fit sets the head to a fitted probe at every step, so the run is the "
                    f"same without {named}")
    if cfg.lr == "auto":
        from .experiments import train_with_lr_search

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("--lr auto runs a search of single-process trials; run it without torchrun (or run "
                              "`vptune sweep`, then train the winner under torchrun)")
        summary = train_with_lr_search(cfg, overwrite=args.overwrite, quiet=args.quiet)
    else:
        summary = train(cfg, overwrite=args.overwrite, quiet=args.quiet)
    _report(cfg.output, summary)
    return 0


def _report(output: str | Path, summary: dict) -> None:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        tested = f": test top-1 {summary['test_top1']:.4f}" if summary.get("test_top1") is not None else \
            f": test mIoU {summary['test_miou']:.4f}" if summary.get("test_miou") is not None else ""
        print(f"task written to {output}{tested}")


def _sweep(args: argparse.Namespace) -> int:
    from .experiments import run_sweep, sweep_config

    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name) and f.name not in SEARCHABLE}
    options = {name: getattr(args, name) for name in (*SEARCHABLE, "sampler", "trials", "pruner", "storage", "study",
                                                       "workers", "seeds") if hasattr(args, name)}
    results = run_sweep(sweep_config(args.config, flags, options))
    retrained = results["retrained"]
    metric = results["metric"]
    shown = SCORE_NAMES[metric]
    print(f"best: {results['best_params']} (val {shown} {results[f'best_val_{metric}']:.4f})"
          + (f"; retrained: test {shown} {retrained['mean']:.4f} +- {retrained['std']:.4f}"
             if retrained["mean"] is not None else ""))
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from .experiments.ablate import AblateConfig, plan, run_ablation, write_set_reports

    common = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    only = _comma_list(args.cells, "--cells") if args.cells is not None else ()  # --cells "" is refused, not "all"
    tasks = {"tasks": tuple(t for text in args.tasks for t in _task_list(text))} if args.tasks else {}
    config = AblateConfig(set=args.set, **tasks,
                          seeds=tuple(_integer(s, "--seeds") for s in _comma_list(args.seeds, "--seeds")),
                          out=args.out, common=common, only=only)
    if args.plan:
        print(plan(config))
        return 0
    if args.report:
        print("written: " + ", ".join(str(path) for path in write_set_reports(config)))
        return 0
    run_ablation(config)
    print(f"written: {Path(args.out) / (args.set + '.md')}, {args.set}.csv, {args.set}.png, runs.jsonl")
    return 0


def _comma_list(text: str, flag: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(","))
    if not all(items):
        raise ConfigError(f"{flag} {text!r}: an empty item; give comma-separated values, e.g. {flag} a,b")
    return items


def _task_list(text: str) -> tuple[str, ...]:
    if Path(text.strip()).expanduser().exists():  # a data path whose name has a comma in it
        return (text.strip(),)
    return _comma_list(text, "--tasks")


def _integer(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not an integer") from None


def _eval(args: argparse.Namespace) -> int:
    from .inference import evaluate, format_metrics

    metrics, names, written = evaluate(args.task, data=args.data, split=args.split, batch_size=args.batch_size,
                                       device=args.device, precision=args.precision, compile=args.compile,
                                       quiet=args.quiet, allow_download=args.allow_download)
    print(format_metrics(metrics, names))
    print(f"\nwritten: {', '.join(str(p) for p in written)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .inference.predictor import Predictor, check_top_k
    from .rundir import RunDir
    from .tasks import read_task_json, segmentation_head_of

    # what the flags mean depends on the task's kind: checked from its task.json, before its backbone loads
    segmentation = segmentation_head_of(read_task_json(RunDir.find_task(args.task))) is not None
    if segmentation and args.top_k is not None:
        raise ConfigError(f"--top-k lists a classifier's classes; {args.task} is a segmentation task (each image gets "
                          f"a mask, written to --output): leave out --top-k")
    if not segmentation and args.output is not None:
        raise ConfigError(f"--output is where a segmentation task's masks go; {args.task} classifies (its predictions "
                          f"are printed): leave out --output")
    top_k = 5 if args.top_k is None else args.top_k
    check_top_k(top_k)  # before the task and its backbone are loaded
    if args.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be a positive number of pixels, got {args.max_pixels}")
    predictor = Predictor.from_task(args.task, device=args.device, precision=args.precision, compile=args.compile,
                                    max_pixels=args.max_pixels, allow_download=args.allow_download)
    if segmentation:  # masks on disk
        return _predict_masks(predictor, args)
    results = predictor.predict_files(args.images, top_k=top_k, skip_bad=args.skip_bad)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(result["image"])
        for guess in result["top"]:
            print(f"  {guess['probability']:7.2%}  {guess['class']}")
    return 0


def _predict_masks(predictor, args: argparse.Namespace) -> int:
    results = predictor.predict_files(args.images, args.output or Path("masks"), skip_bad=args.skip_bad)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        shares = ", ".join(f"{row['class']} {row['share']:.1%}" for row in result["classes"])
        print(f"{result['image']} -> {result['mask']} ({shares})")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    run_bench(bench_settings(args))
    return 0


def bench_settings(args: argparse.Namespace):
    """The `BenchSettings` that `vptune bench`'s flags give (not yet resolved)."""
    from .bench import BenchSettings

    names = {field.name for field in dataclasses.fields(BenchSettings)}
    return BenchSettings(**{name: value for name, value in vars(args).items() if name in names})


def _serve(args: argparse.Namespace) -> int:
    from .inference.server import ServeSettings, parse_task_flags, serve

    settings = ServeSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeSettings)})
    serve(parse_task_flags(args.task), settings, allow_download=args.allow_download)
    return 0


def _info(args: argparse.Namespace) -> int:
    from .inference import describe

    print(describe(args.target))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .experiments import run_demo

    run_demo(args.output, data=args.data, epochs=args.epochs, smoke=args.smoke, quiet=args.quiet,
             segmentation=args.segmentation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
