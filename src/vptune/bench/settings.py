"""`BenchSettings`: what `vptune bench` measures, as a dataclass (each field is a flag of the same name, with its
help); `resolved()` fills the defaults and checks everything before anything is built or timed."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch

from ..data import DataError, read_data
from ..devices import AUTO, resolve_device, resolve_precision, resolve_workers
from ..errors import ConfigError, brief
from ..model import HEADS, adapter_for, check_feature_map, family_of, supported_families
from .grid import METHOD_MODES, MODELS, PATHS, PRECISIONS, spec_of

# Defaults of the full grid and of --quick (explicit settings win over both).
DEFAULTS = {"models": ["vit-s14", "vit-b16"], "prompts": [10, 50, 100, 200], "batch": 32, "threads": None}
QUICK = {"models": ["tiny"], "prompts": [2, 4], "batch": 4, "train_batch": 2, "repeats": 1, "threads": 1}


def _setting(default, help: str, **kwargs):
    if isinstance(default, list):
        kwargs["default_factory"], default = (lambda value=default: list(value)), dataclasses.MISSING
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class BenchSettings:
    """A bench run. Lists are comma lists on the command line; None means the default (or --quick's)."""

    models: list[str] | None = _setting(None, f"aliases ({', '.join(MODELS)}) or timm model names of a family "
                                              f"vptune prompts (default: {','.join(DEFAULTS['models'])})")
    prompts: list[int] | None = _setting(None, "prompt lengths p (default: 10,50,100,200)")
    modes: list[str] | None = _setting(None, "deep,shallow (default: both; deep only for vit-b16)")
    methods: list[str] | None = _setting(None, f"prompt methods measured beside VPT-deep in the same rounds, each "
                                               f"with an 'x vpt-deep' ratio: {', '.join(METHOD_MODES)} (default: "
                                               f"none; with them, VPT-deep only unless --modes says otherwise)")
    heads: list[str] | None = _setting(None, f"segmentation heads ({', '.join(HEADS)}): measure segmenters with "
                                             f"each instead of classifiers, the floor being the head on the frozen "
                                             f"backbone (default: classifiers)")
    img_size: int | None = _setting(None, "input size in pixels for every model (default: each model's own, 224)")
    paths: list[str] = _setting(list(PATHS[:4]), f"from {', '.join(PATHS)} (default: {','.join(PATHS[:4])})")
    batch: int | None = _setting(None, "inference batch, default 32 (batch 1 is always measured too)")
    train_batch: int | None = _setting(None, "training batch (default: --batch on CUDA, 8 elsewhere, where a "
                                             "ViT-B/16 step at 32 takes ~40 s on 2 CPU cores)")
    repeats: int | None = _setting(None, "timed repeats (default: 3; 1 for vit-b16)")
    warmup: int = _setting(1, "untimed rounds before the repeats (default: 1)")
    device: str = _setting(AUTO, "auto (default: CUDA, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps")
    threads: int | None = _setting(None, "torch CPU threads (default: torch's choice)")
    precisions: list[str] | None = _setting(None, f"comma list from {', '.join(PRECISIONS)}: fp32, or autocast to "
                                                  "bf16 / fp16 (fp16 training with a gradient scaler), each measured "
                                                  "side by side (default: fp32,bf16 on a GPU with bf16, else fp32)")
    compile: bool = _setting(False, "also measure every config compiled (torch.compile; eager where compiling fails, "
                                    "with a log line), side by side with eager; compile time is not timed but "
                                    "reported (compile_s)")
    loader: str | None = _setting(None, "also time the data loader alone on this data set (built-in name or path), "
                                        "at each model's image size, beside the model's training img/s")
    num_workers: str | int = _setting(AUTO, "the --loader's worker processes: auto (default: as training, none on "
                                            "the CPU, the free cores up to 8 on a GPU) or a number")
    memory: bool = _setting(True, "measure peak memory (--no-memory skips it)")
    quick: bool = _setting(False, "tiny model and sizes (for tests)")
    out: Path = _setting(Path("runs/bench"), "folder for bench.csv, bench.json, bench.md (default: runs/bench)")

    def resolved(self) -> "BenchSettings":
        """A copy with the defaults (or --quick's) filled in and the device's settings resolved; ConfigError names
        the first setting that is wrong, before anything is built or timed."""
        settings = dataclasses.replace(self, out=Path(self.out))
        for key, value in (QUICK if settings.quick else DEFAULTS).items():
            if getattr(settings, key) is None:
                setattr(settings, key, value)
        settings._check_lists()
        settings._check_sizes()
        settings._resolve_device_settings()
        if settings.loader:
            try:  # fail before any timing, not after minutes of it
                read_data(settings.loader)
            except DataError as err:
                raise ConfigError(f"--loader {settings.loader}: {err}") from err
        return settings

    def _check_lists(self) -> None:
        bad_paths = [p for p in self.paths if p not in PATHS]
        if bad_paths or "tokens" not in self.paths or "floor" not in self.paths:
            raise ConfigError(f"--paths must include floor and tokens (the ratios' bases), from {', '.join(PATHS)}; "
                              f"got {','.join(self.paths) or 'nothing'}")
        if self.methods is not None and (not self.methods or any(m not in METHOD_MODES for m in self.methods)):
            raise ConfigError(f"--methods must be a comma list from {', '.join(METHOD_MODES)}; got "
                              f"{','.join(self.methods) or 'nothing'}")
        if self.heads is not None and (not self.heads or any(h not in HEADS for h in self.heads)):
            raise ConfigError(f"--heads must be a comma list from {', '.join(HEADS)}; got "
                              f"{','.join(self.heads) or 'nothing'}")
        if self.heads and "da-vpt" in (self.methods or ()):
            raise ConfigError("--methods da-vpt: its metric loss needs one class an image, which a segmenter has not; "
                              "leave it out with --heads")
        if self.modes is not None and (not self.modes or any(m not in ("deep", "shallow") for m in self.modes)):
            raise ConfigError(f"--modes must be a comma list from deep, shallow; got "
                              f"{','.join(self.modes) or 'nothing'}")

    def _check_sizes(self) -> None:
        for flag, value, least in (("--batch", self.batch, 1), ("--train-batch", self.train_batch, 1),
                                   ("--repeats", self.repeats, 1), ("--warmup", self.warmup, 0),
                                   ("--threads", self.threads, 1), ("--img-size", self.img_size, 1)):
            if value is not None and value < least:
                raise ConfigError(f"{flag} must be a whole number >= {least}, got {value}")
        if not self.prompts or min(self.prompts) < 1:
            raise ConfigError(f"--prompts must be a comma list of prompt lengths >= 1, got "
                              f"{','.join(map(str, self.prompts)) or 'nothing'}")
        unknown = [m for m in self.models if m not in MODELS and not timm.is_model(m)]
        if unknown or not self.models:
            raise ConfigError(f"--models: {','.join(unknown) or 'nothing'}: give aliases ({', '.join(MODELS)}) or timm "
                              f"model names (timm.list_models('vit_*'))")
        for alias in self.models:
            problem = _why_not_timed(alias, self.img_size, dense=bool(self.heads))
            if problem:
                raise ConfigError(f"--models {alias}: {problem}")
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} is a file; give a folder for bench.csv, bench.json and bench.md")

    def _resolve_device_settings(self) -> None:
        """--device, --precisions, --num-workers and --train-batch, which depend on the device."""
        self.device = resolve_device(self.device)
        if self.precisions is None:  # bf16 where vptune's `auto` would train in it (a GPU with bf16 units)
            self.precisions = list(dict.fromkeys(["fp32", resolve_precision(AUTO, self.device)]))
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise ConfigError(f"--precisions must be a comma list from {', '.join(PRECISIONS)}, got "
                              f"{','.join(unknown) or 'nothing'}")
        self.precisions = list(dict.fromkeys(resolve_precision(p, self.device) for p in self.precisions))
        if self.num_workers != AUTO and not str(self.num_workers).isdigit():
            raise ConfigError(f"--num-workers must be auto or a whole number >= 0, got {self.num_workers!r}")
        self.num_workers = resolve_workers(self.num_workers, self.device)
        if self.train_batch is None:
            self.train_batch = self.batch if self.device.startswith("cuda") else 8


def _why_not_timed(alias: str, img_size: int | None, dense: bool) -> str | None:
    """Why the bench cannot time `alias` at `img_size` (None when it can), from its architecture alone; `dense`:
    with a segmentation head."""
    spec = spec_of(alias)
    given = {"img_size": img_size} if img_size else {}
    try:
        with torch.device("meta"):  # the architecture without allocating its weights
            model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **{**spec.kwargs, **given})
    except Exception as err:  # timm refuses the size (e.g. a window that does not divide it)
        return f"timm cannot build it at --img-size {img_size}: {brief(err)}"
    if family_of(model) is None:
        return f"the bench needs a timm model of a family vptune prompts ({supported_families()})"
    adapter = adapter_for(model)
    patch = adapter.patch_size[0]
    if min(adapter.img_size) < patch:
        return f"--img-size {img_size} is smaller than its patch ({patch} px); use at least {patch}"
    if dense:
        try:
            check_feature_map(adapter)
        except ValueError as err:
            return f"--heads: {err}"
    return None
