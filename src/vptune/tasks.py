"""Task checkpoints, PEFT-style: the small trained part next to the config that rebuilds it.

A task directory holds
- `prompt.safetensors`: prompts (+ projection) and head, plus any backbone tensors the method tuned;
- `task.json`: the method and its settings, the PromptConfig, the backbone's name, image size and a fingerprint
  of its weights, normalisation, classes, the vptune version, and a sha256 of the weights file.
`load_task` asks the method registry to rebuild the model, so a task saved from Python (`save_task(model, dir)`)
reloads exactly like one saved by training.
Both are written atomically (temp file in the same directory, then rename), so an interrupted save never
leaves a half-written file behind. Loading never unpickles anything.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ._io import atomic_write, atomic_write_text, file_sha256, package_version
from .backbones import backbone_fingerprint, backbone_on_this_machine, create_backbone
from .errors import CheckpointError, VptuneError
from .methods import Method, method_from_dict, method_of
from .model import HEADS, LEGACY_PUP_CHANNELS, FeatureNorm, PromptConfig, PromptedModel, PromptedSegmenter, family_of

WEIGHTS_FILE = "prompt.safetensors"
CONFIG_FILE = "task.json"
FORMAT = "vptune-task"
REQUIRED_FIELDS = ("prompt", "num_classes", "tensors", "backbone", "backbone.name", "backbone.img_size", "data",
                   "data.input_size", "data.mean", "data.std")
FORMAT_VERSION = 2  # 2: "method" is {"name": ..., options}; 1 kept a bare name and options under the name's key


# ------------------------------------------------------------------------------------------------- saving
def save_task(model: PromptedModel, directory: str | os.PathLike, **extra: Any) -> Path:
    """Write `model`'s task checkpoint into `directory` (created if needed); `extra` goes into task.json.

    The method is the one `build_model` recorded on the model (VPT or linear for a PromptedModel made directly).
    """
    directory = Path(directory)
    tensors = task_tensors(model)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    meta = task_metadata(model, tensors, file_sha256(directory / WEIGHTS_FILE))
    meta.update(extra)
    atomic_write_text(directory / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return directory


def task_tensors(model: PromptedModel) -> dict[str, torch.Tensor]:
    """Everything outside the frozen backbone, plus backbone tensors a method chose to tune."""
    tensors = {name: t for name, t in model.state_dict().items() if not name.startswith("backbone.")}
    tensors.update({name: p for name, p in model.named_parameters()
                    if name.startswith("backbone.") and p.requires_grad})
    return {name: t.detach().contiguous().cpu() for name, t in tensors.items()}


def _segmentation_head(model: PromptedModel) -> dict[str, Any]:
    if not isinstance(model, PromptedSegmenter):
        return {}
    return {"segmentation": model.head_kind,
            **({"channels": model.head_channels} if model.head_channels is not None else {})}


def task_metadata(model: PromptedModel, tensors: dict[str, torch.Tensor], weights_sha256: str) -> dict[str, Any]:
    data = model.data_config
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vptune_version": package_version(),
        "method": method_of(model).to_dict(),
        "prompt": model.prompt_config.to_dict(),
        "num_classes": model.num_classes,
        "head": {"norm": isinstance(model.head_norm, FeatureNorm), **_segmentation_head(model)},
        "class_names": model.class_names,
        "backbone": {
            "name": model.backbone_name,
            "weights": _weights_path(model.backbone),
            "fingerprint": backbone_fingerprint(model.backbone),
            "family": model.family,
            "img_size": list(model.adapter.img_size),
            "embed_dim": model.embed_dim,
            "depth": model.adapter.depth,
            "num_parameters": model.adapter.num_parameters(),
        },
        "data": {"input_size": list(data["input_size"]), "mean": list(data["mean"]), "std": list(data["std"]),
                 "interpolation": data.get("interpolation"), "crop_pct": data.get("crop_pct")},
        "tensors": {name: list(t.shape) for name, t in tensors.items()},
        "weights_sha256": weights_sha256,
    }


# ------------------------------------------------------------------------------------------------ loading
def load_task(directory: str | os.PathLike, backbone: nn.Module | str | None = None, *,
              check_fingerprint: bool = True, path: str = "prefix", allow_download: bool = False) -> PromptedModel:
    """Rebuild a PromptedModel from a task directory.

    Args:
        directory: written by `save_task`.
        backbone: the frozen backbone the task was trained on (a module), a backbone name for
            `vptune.backbones.create_backbone`, or None to build the one named in task.json.
        check_fingerprint: refuse a backbone whose weights differ from the one the task was trained on.
        path: "prefix" (fast) or "tokens" (reference) computation.
        allow_download: with `backbone` None, fetch the backbone task.json names if it is not on this machine
            (a task folder from someone else makes this machine download nothing unasked).
    """
    directory = Path(directory)
    meta = read_task_json(directory)
    method = task_method(meta, directory)
    backbone = _resolve_backbone(backbone, meta, directory, allow_download)
    _check_backbone_matches(backbone, meta, check_fingerprint)
    tensors = _read_tensors(_checked_weights(directory, meta, backbone))
    model = _rebuild(directory, meta, backbone, path)
    try:
        method.adapt(backbone)  # e.g. LoRA's modules must be in place before its tensors load
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{directory / CONFIG_FILE}: cannot rebuild the model: {err}") from err
    model.method = method
    _load_tensors(model, tensors, directory)
    return model.eval()  # ready to predict: no prompt dropout, a segmentation head's norms on their statistics


def check_task(directory: str | os.PathLike) -> dict[str, Any]:
    """Everything `load_task` checks, without loading weights or allocating a tensor: task.json's fields and
    method, the weights file's checksum, and the model task.json describes (its prompt layers against the
    backbone's depth, its shapes against the file's header). Returns task.json's contents."""
    directory = Path(directory)
    meta = read_task_json(directory)
    task_method(meta, directory)
    with torch.device("meta"):
        backbone = create_backbone(meta["backbone"]["name"], img_size=meta["backbone"]["img_size"][0],
                                   pretrained=False)
    _checked_weights(directory, meta, backbone)
    return meta


def _checked_weights(directory: Path, meta: dict[str, Any], backbone: nn.Module) -> Path:
    """prompt.safetensors, verified against task.json's checksum, its header's shapes against the model task.json
    describes, built on the meta device: a task.json declaring 10^8 prompt tokens is refused without memory."""
    with torch.device("meta"):
        skeleton = _rebuild(directory, meta, backbone, "prefix")
    weights_path = verified_weights(directory, meta)
    _check_shapes(skeleton, tensor_shapes(weights_path), directory)
    return weights_path


def _rebuild(directory: Path, meta: dict[str, Any], backbone: nn.Module, path: str) -> PromptedModel:
    try:
        prompt = PromptConfig.from_dict(meta["prompt"])
        settings = dict(path=path, backbone_name=meta["backbone"]["name"], class_names=meta.get("class_names"))
        head = meta.get("head", {})
        if segmentation_head_of(meta):  # a segmentation task: its head kind, on the final image tokens
            return PromptedSegmenter(backbone, prompt, int(meta["num_classes"]), head=head["segmentation"],
                                     head_channels=head.get("channels", LEGACY_PUP_CHANNELS), **settings)
        return PromptedModel(backbone, prompt, int(meta["num_classes"]), head_norm=bool(head.get("norm", False)),
                             **settings)
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{directory / CONFIG_FILE}: cannot rebuild the model: {err}") from err


def segmentation_head_of(meta: dict[str, Any]) -> str | None:
    """A segmentation task's head kind ("linear", "pup") from its task.json; None for a classifier."""
    head = meta.get("head")
    return head.get("segmentation") if isinstance(head, dict) else None


def task_method(meta: dict[str, Any], directory: Path) -> Method:
    """The method a task.json records. Version 1 wrote a bare name, with the method's options under a key of
    that name (e.g. "lora": {"rank": 8}); files without a method are VPT (by prompt mode) or linear."""
    recorded = meta.get("method")
    if recorded is None:
        prompt = meta.get("prompt") or {}
        recorded = f"vpt-{prompt.get('mode', 'deep')}" if prompt.get("num_tokens", 0) > 0 else "linear"
    if isinstance(recorded, str):
        legacy = meta.get(recorded) if isinstance(meta.get(recorded), dict) else {}
        recorded = {"name": recorded, **{f"{recorded}_{key}": value for key, value in legacy.items()}}
    try:
        return method_from_dict(recorded)
    except VptuneError as err:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {err}") from err


def read_task_json(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise CheckpointError(f"task directory {directory} does not exist (or is not a directory)")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        if (directory / "best" / CONFIG_FILE).is_file():  # the commands take a run; the library takes its task
            raise CheckpointError(f"{directory} is a training run, not a task: load its best task, "
                                  f"{directory / 'best'} (or last/)")
        raise CheckpointError(f"{directory} is not a vptune task: {CONFIG_FILE} is missing "
                              f"(a task directory is written by `vptune.save_task(model, dir)` or `vptune train`)")
    try:
        meta = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_path} is corrupt (not valid JSON: {err}); re-save the task") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a vptune task file (no \"format\": \"{FORMAT}\")")
    version = meta.get("format_version", 1)
    if not _is_int(version):
        raise CheckpointError(f"{config_path}: format_version must be an integer, got {version!r}; re-save the task")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{config_path} has format version {meta['format_version']}, newer than this vptune "
                              f"understands ({FORMAT_VERSION}); upgrade vptune")
    for key in REQUIRED_FIELDS:
        parent, _, child = key.partition(".")
        if parent not in meta or (child and (not isinstance(meta[parent], dict) or child not in meta[parent])):
            raise CheckpointError(f"{config_path} lacks the field {key!r}; the file is incomplete, re-save the task")
    problem = _type_problem(meta)
    if problem:
        raise CheckpointError(f"{config_path}: {problem}; the file was edited or damaged, re-save the task")
    return meta


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: Any, count: int, positive: bool = False) -> bool:
    return (isinstance(value, list) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (v > 0 or not positive) for v in value))


def _type_problem(meta: dict[str, Any]) -> str | None:
    """What in task.json has the wrong type or an impossible value (None if nothing): checked before any of it
    reaches torch, so an edited file is a clear error, never a crash or a silently different model."""
    backbone, data, num_classes = meta["backbone"], meta["data"], meta["num_classes"]
    checks = {
        "num_classes must be a positive integer": _is_int(num_classes) and num_classes > 0,
        "prompt must be a mapping": isinstance(meta["prompt"], dict),
        "tensors must map names to shapes": isinstance(meta["tensors"], dict) and all(
            isinstance(shape, list) and all(_is_int(n) and n >= 0 for n in shape) for shape in meta["tensors"].values()),
        "backbone.name must be text": isinstance(backbone["name"], str),
        "backbone.img_size must be [height, width]": _numbers(backbone["img_size"], 2, positive=True)
        and all(_is_int(v) for v in backbone["img_size"]),
        "backbone.fingerprint must be text": isinstance(backbone.get("fingerprint", ""), (str, type(None))),
        "backbone.family must be text": isinstance(backbone.get("family", "vit"), str),
        "backbone.weights must be a path or null": isinstance(backbone.get("weights"), (str, type(None))),
        "data.input_size must be [3, height, width]": _numbers(data["input_size"], 3, positive=True)
        and all(_is_int(v) for v in data["input_size"]),
        "data.mean must be 3 numbers": _numbers(data["mean"], 3),
        "data.std must be 3 positive numbers": _numbers(data["std"], 3, positive=True),
        "head must be a mapping with a true/false norm": isinstance(meta.get("head", {}), dict)
        and isinstance(meta.get("head", {}).get("norm", False), bool),
        f"head.segmentation must be one of {', '.join(HEADS)}": not isinstance(meta.get("head"), dict)
        or meta["head"].get("segmentation", HEADS[0]) in HEADS,
        "head.channels must be a positive integer": not isinstance(meta.get("head"), dict)
        or (_is_int(meta["head"].get("channels", 1)) and meta["head"].get("channels", 1) > 0),
        "class_names must be a list of one name per class, or null": meta.get("class_names") is None or (
            isinstance(meta["class_names"], list) and _is_int(num_classes)
            and len(meta["class_names"]) == num_classes and all(isinstance(n, str) for n in meta["class_names"])),
        "method must be a name or a mapping with a name": isinstance(meta.get("method", "vpt-deep"), str) or (
            isinstance(meta.get("method"), dict) and isinstance(meta["method"].get("name"), str)),
        "weights_sha256 must be text": isinstance(meta.get("weights_sha256", ""), (str, type(None))),
    }
    return next((problem for problem, ok in checks.items() if not ok), None)


def read_task_tensors(directory: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    return _read_tensors(verified_weights(directory, meta))


def verified_weights(directory: Path, meta: dict[str, Any]) -> Path:
    """The task's prompt.safetensors, checked against the sha256 its task.json records."""
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{directory} lacks {WEIGHTS_FILE} (the prompts and head); the task was not saved "
                              f"completely")
    expected_sha = meta.get("weights_sha256")
    if expected_sha and file_sha256(weights_path) != expected_sha:
        raise CheckpointError(f"{weights_path} does not match {CONFIG_FILE} (sha256 differs): the file is truncated, "
                              f"corrupt, or from another save; re-save the task")
    return weights_path


def _read_tensors(weights_path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file ({err}); re-save the task") from err


def tensor_shapes(weights_path: Path) -> dict[str, tuple[int, ...]]:
    """The shapes in a safetensors file's header, read without loading a tensor."""
    try:
        with safe_open(str(weights_path), framework="pt") as file:
            return {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file ({err}); re-save the task") from err


def _check_shapes(model: PromptedModel, shapes: dict[str, tuple[int, ...]], directory: Path) -> None:
    """The task's own tensors (prompts, head) against the model task.json describes, before either is allocated.
    Backbone tensors (LoRA, tuned biases, ...) are checked once their modules are in place (_load_tensors)."""
    for name, param in model.state_dict().items():
        if name.startswith("backbone."):
            continue
        if name not in shapes:
            raise CheckpointError(f"{directory / WEIGHTS_FILE} does not fit its task.json: it lacks tensor {name!r}")
        if tuple(param.shape) != shapes[name]:
            raise CheckpointError(f"{directory / WEIGHTS_FILE}: tensor {name!r} has shape {shapes[name]}, the model "
                                  f"built from task.json expects {tuple(param.shape)}{_shape_hint(name, model)}")


def _resolve_backbone(backbone: nn.Module | str | None, meta: dict[str, Any], directory: Path,
                      allow_download: bool) -> nn.Module:
    if isinstance(backbone, nn.Module):
        return backbone
    saved = meta["backbone"]
    weights = saved.get("weights") if backbone is None else None
    if weights and not Path(weights).is_file():
        raise CheckpointError(f"the task's backbone weights file {weights} is gone; pass backbone= (a module, or a "
                              f"name with its weights) explicitly")
    name = backbone or saved["name"]
    if backbone is None and weights is None and not allow_download and not backbone_on_this_machine(name):
        raise CheckpointError(f"{directory / CONFIG_FILE} names the backbone {name!r}, which is not on this machine, "
                              f"and vptune downloads nothing a task folder asks for by itself: add --allow-download "
                              f"(Python: allow_download=True) to fetch it, or pass the backbone (backbone=...)")
    return create_backbone(name, img_size=saved["img_size"][0], weights=weights)


def _check_backbone_matches(backbone: nn.Module, meta: dict[str, Any], check_fingerprint: bool) -> None:
    saved = meta["backbone"]
    family, saved_family = family_of(backbone), saved.get("family", "vit")  # tasks before families were ViT tasks
    if family is not None and family.family != saved_family:
        raise CheckpointError(f"the task was trained on a {saved_family} backbone ({saved.get('name')!r}), but the "
                              f"given backbone is a {family.family} ({type(backbone).__name__}); pass the backbone the "
                              f"task was trained on")
    img_size = list(family(backbone).img_size) if family is not None else []
    if saved.get("img_size") and img_size and img_size != saved["img_size"]:
        raise CheckpointError(f"the task was trained at image size {saved['img_size']} but the backbone is built for "
                              f"{img_size}; build the backbone with img_size={saved['img_size'][0]}")
    if check_fingerprint and saved.get("fingerprint"):
        given = backbone_fingerprint(backbone)
        if given != saved["fingerprint"]:
            raise CheckpointError(f"wrong backbone: the task was trained on {saved.get('name')!r} with weights "
                                  f"fingerprint {saved['fingerprint']}, but the given backbone's weights have "
                                  f"fingerprint {given}; pass the backbone the task was trained on "
                                  f"(or check_fingerprint=False if you know what you are doing)")


def _load_tensors(model: PromptedModel, tensors: dict[str, torch.Tensor], directory: Path) -> None:
    expected = task_tensors(model).keys() | {k for k in tensors if k.startswith("backbone.")}
    missing, unexpected = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} does not fit its task.json: missing tensors {missing}, "
                              f"unexpected tensors {unexpected}")
    state = model.state_dict()
    for name, tensor in tensors.items():
        if name not in state:
            raise CheckpointError(f"{directory / WEIGHTS_FILE}: tensor {name!r} has no place in this model")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{directory / WEIGHTS_FILE}: tensor {name!r} has shape {tuple(tensor.shape)}, the "
                                  f"model built from task.json expects {tuple(state[name].shape)}"
                                  f"{_shape_hint(name, model)}")
    model.load_state_dict(tensors, strict=False)
    for name, param in model.named_parameters():
        if name.startswith("backbone.") and name in tensors:
            param.requires_grad_(True)  # a tuned backbone tensor stays part of the task when re-saved


def _shape_hint(name: str, model: PromptedModel) -> str:
    if name == "prompts.tokens":
        cfg = model.prompt_config
        return (f" (task.json says num_tokens={cfg.num_tokens}, location={cfg.location!r}, "
                f"{len(model.prompt_blocks)} prompted blocks)")
    if name.startswith("head."):
        return f" (task.json says num_classes={model.num_classes}, embed_dim={model.embed_dim})"
    return ""


# ------------------------------------------------------------------------------------------------ helpers
def _weights_path(backbone: nn.Module) -> str | None:
    """The local weights file the backbone was built from (`create_backbone(weights=...)`), if any."""
    weights = getattr(backbone, "vptune_weights", None)
    return str(Path(weights).resolve()) if weights else None
