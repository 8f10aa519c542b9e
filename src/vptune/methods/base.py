"""`Method`: what a tuning method is, and the registry that finds one by name (as PEFT registers its tuners).

Every method trains the same `PromptedModel` (frozen backbone + linear head on the final [CLS]); methods differ in
the prompt they add, which backbone tensors they unfreeze or insert, and their optimizer and default learning
rates. So one training loop, one task format and one evaluation serve them all. A method's settings go into
task.json (`to_dict`) and come back (`method_from_dict`), so a task reloads the same however it was saved.

Adding a method means one file: subclass `Method`, give it a `name`, decorate it with `@register`.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..backbones import backbone_fingerprint
from ..errors import ConfigError
from ..model import PromptConfig, PromptedModel, PromptedSegmenter, adapter_for, family_of

log = logging.getLogger("vptune")
REGISTRY: dict[str, type["Method"]] = {}


@dataclass(frozen=True)
class Method:
    """A tuning method. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]                 # as typed after --method; `pattern` for parametrised names
    summary: ClassVar[str]              # one line for --help
    pattern: ClassVar[str | None] = None  # a regex with one group per dataclass field, e.g. partial-(\d+)
    frozen_backbone: ClassVar[bool] = True   # every backbone weight stays as it was (stem cache applies)
    head_only: ClassVar[bool] = False   # only the head trains: features can be computed once
    optimizer: ClassVar[str] = "sgd"
    default_lr: ClassVar[float] = 1e-3  # base lr of the tuned tensors (scaled by batch / 256)
    default_head_lr: ClassVar[float] = 1e-3
    head_norm: ClassVar[bool] = False   # standardise the head's input (TrainConfig.head_norm)
    head_init: ClassVar[str] = "random"  # or "probe" (TrainConfig.head_init)
    prompt_init: ClassVar[str] = "xavier"  # or "patches" where prompts are prepended tokens (TrainConfig.prompt_init)

    @property
    def prunes(self) -> bool:
        """Whether training prunes the prompts after a first run (E2VPT with a pruning share)."""
        return False

    @property
    def label(self) -> str:
        """The name this instance is typed as (with its parameter, e.g. partial-2)."""
        return self.name

    def prompt_config(self, prompt: PromptConfig) -> PromptConfig:
        """The prompt this method trains, given the user's prompt settings. Default: no prompt."""
        return dataclasses.replace(prompt, num_tokens=0)

    def adapt(self, backbone: nn.Module) -> None:
        """Unfreeze (or insert) the backbone tensors this method tunes. Used at training and at loading."""

    def prepare(self, model: PromptedModel) -> None:
        """Set up what `training_loss` reads from the model's forward pass (at training only)."""

    def training_loss(self, model: PromptedModel, labels: torch.Tensor) -> torch.Tensor | None:
        """A loss added to the cross-entropy at training (a batch mean), read from the forward just run; None: none."""
        return None

    def options(self) -> dict[str, Any]:
        """Settings beyond the name that task.json must keep to rebuild the model."""
        return dataclasses.asdict(self)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.label, **self.options()}


# One head for every method trained by gradient steps, so that methods differ only in what else they train: the
# backbone's [CLS] standardised (its offset and scale, norm near 48, otherwise set the head's stable lr) and the head
# started at the converged linear probe on it, so the tuned tensors learn from the first step instead of waiting
# for a random head (for full fine-tuning this is LP-FT, Kumar et al., ICLR 2022). Base lr, scaled by batch / 256.
# docs/recipe.md chose it for VPT; docs/results.md ("The baselines' head") measured it for the others.
HEAD_LR = 1e-2


@dataclass(frozen=True)
class GradientMethod(Method):
    """A method trained by gradient steps (every one but the fitted linear probe): AdamW and the shared head."""

    optimizer = "adamw"
    default_head_lr = HEAD_LR
    head_norm = True
    head_init = "probe"


def check_setting(name: str, value: object, ok: Callable[[float], bool], need: str, whole: bool = False) -> None:
    """ConfigError "NAME must be NEED, got VALUE" unless `value` is a number (a whole one with `whole`; never a
    bool) for which ok(value) holds: a method's own settings, checked where they are made."""
    kinds = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not ok(value):
        raise ConfigError(f"{name} must be {need}, got {value!r}")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method findable by its name."""
    if cls.name in REGISTRY:
        raise RuntimeError(f"method name {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return list(REGISTRY)


def method_summaries() -> str:
    """One line per registered method, for --help."""
    return "\n".join(f"  {cls.name:<12} {cls.summary}" for cls in REGISTRY.values())


def get_method(name: str, **options: Any) -> Method:
    """The method typed as `name` (e.g. "vpt-deep", "partial-2"), with the `options` its fields take
    (others are ignored, so callers can pass every method option they hold)."""
    for cls in REGISTRY.values():
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in options.items() if k in fields}
        if cls.pattern is None and name == cls.name:
            return _create(cls, kwargs)
        if cls.pattern is not None and (match := re.fullmatch(cls.pattern, str(name))):
            parsed = dict(zip([f.name for f in dataclasses.fields(cls)], (int(g) for g in match.groups())))
            return _create(cls, {**kwargs, **parsed})
    raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(method_names())}")


def method_from_dict(data: dict[str, Any] | str) -> Method:
    """Inverse of `Method.to_dict` (a bare name is accepted too)."""
    if isinstance(data, str):
        return get_method(data)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ConfigError(f"a method must be recorded as {{\"name\": ..., options}}, got {data!r}")
    options = {k: v for k, v in data.items() if k != "name"}
    return get_method(data["name"], **options)


def _create(cls: type[Method], kwargs: dict[str, Any]) -> Method:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"method {cls.name!r}: {err}") from err


def build_model(method: Method | str, backbone: nn.Module, prompt: PromptConfig, num_classes: int, *,
                class_names: Sequence[str] | None = None, head_norm: bool = False,
                segmentation_head: str | None = None, **options: Any) -> PromptedModel:
    """The model for `method` (a Method or its name, with `options` such as lora_rank=8), with exactly that
    method's parameters trainable. The model remembers its method, so `save_task` records it.
    segmentation_head: "linear" or "pup" for a `PromptedSegmenter` (a class a pixel) instead of a classifier."""
    if isinstance(method, str):
        method = get_method(method, **options)
    backbone_fingerprint(backbone)  # remember the base weights before a method starts changing them
    try:
        if segmentation_head is not None:
            model = PromptedSegmenter(backbone, method.prompt_config(prompt), num_classes, head=segmentation_head,
                                      class_names=class_names)
        else:
            model = PromptedModel(backbone, method.prompt_config(_own_pooling(prompt, backbone)), num_classes,
                                  class_names=class_names, head_norm=head_norm)
    except (ValueError, TypeError) as err:  # a prompt that does not fit this backbone or task, an unknown family
        raise ConfigError(str(err)) from err
    method.adapt(backbone)  # after the wrapper froze everything
    method.prepare(model)
    model.method = method
    return model


def _own_pooling(prompt: PromptConfig, backbone: nn.Module) -> PromptConfig:
    """Pooling "cls" (the default) on a backbone without a class token (Swin, SAM's encoder) reads what that
    backbone itself pools: the mean of its final image tokens."""
    if prompt.pooling != "cls" or family_of(backbone) is None or adapter_for(backbone).has_class_token:
        return prompt
    log.info(f"{type(backbone).__name__} has no [CLS] token: the head reads the mean of the final image tokens "
             f"(pooling image-pool), as the backbone itself pools")
    return dataclasses.replace(prompt, pooling="image-pool")


def method_of(model: PromptedModel) -> Method:
    """The method a model was built with; for a PromptedModel made directly, VPT (by its prompt mode) or linear."""
    method = getattr(model, "method", None)
    if isinstance(method, Method):
        return method
    config = model.prompt_config
    return get_method(f"vpt-{config.mode}" if config.enabled else "linear")


def optimizer_groups(model: PromptedModel, lr: float, head_lr: float, weight_decay: float) -> list[dict]:
    """Parameter groups: the head gets its own lr (the backbone's [CLS] norm can be large); "concat-channel"'s new
    patch-embedding weights the main lr / their fan-in (below); the rest the main lr."""
    head = list(model.head.parameters())
    channels = getattr(model.prompts, "channel_weight", None)
    rest = [p for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith("head.") and p is not channels]
    groups = [{"params": head, "lr": head_lr, "weight_decay": weight_decay, "name": "head"}]
    if channels is not None and channels.requires_grad:
        # Adam moves every weight by about lr a step, all in the direction that lowers the loss, so a linear map's
        # output moves by about lr x its fan-in (p x patch area, ~2,000 at p = 10): at the prompts' lr the first
        # steps swamped the image's own embedding and every run diverged. Divided by the fan-in (muP's rule for
        # Adam), a step moves the embedding as much as it moves a prompt token.
        groups.insert(0, {"params": [channels], "lr": lr / channels[0].numel(), "weight_decay": weight_decay,
                          "name": "channels"})
    if rest:
        groups.insert(0, {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "tuned"})
    return groups
