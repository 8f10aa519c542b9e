"""`PromptedModel`: a frozen timm backbone with learned prompts and a linear head (`PromptedViT` is its old name).

Token layout inside the blocks (prepend): [CLS, register tokens..., prompt slots (p), patch tokens (m)].
At a block that has a prompt the slots are set to that block's prompt (inserted the first time,
replaced afterwards); at a block without one, whatever the slots hold is carried on. "add" instead adds
the block's prompt element-wise to every existing token. Each location is a class in `locations.py`; what a
backbone family looks like inside is its adapter's business (`families/`): this file knows neither.

Two ways to compute the same thing:
- `path="tokens"`: the reference. Prompts are ordinary tokens of the sequence, as in the original code.
- `path="prefix"` (default): at a block whose prompt outputs are never read, the prompts contribute only
  keys and values (see `attention.py`), computed once per batch and cached at inference; and the last
  block computes the [CLS] output only (the head reads nothing else). The no-prompt path (linear probe)
  uses the same last-block shortcut.

`forward` = `stem` (the blocks before the first prompt, which see the image alone) then `forward_from_stem`:
training with frozen blocks and no random augmentation can compute the stem once per image (`vptune.training.stem_cache`).

`grad_checkpointing=True` recomputes each block in the backward pass instead of keeping its activations
(much less training memory for about one extra forward pass of time; see docs/performance.md).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import PromptConfig
from .families import BackboneAdapter, adapter_for
from .locations import location_for
from .prompts import Prompts

PATHS = ("prefix", "tokens")
READS_PROMPTS = ("prompt-pool", "global-pool")  # poolings that need the prompts' outputs of the last block


class PromptedModel(nn.Module):
    """A frozen timm backbone (any family in `families/`), prompts, and a fresh linear head on what the pooling
    reads (the final normed [CLS] by default).

    Args:
        backbone: a timm model of a supported family (ViT, Eva: see `vptune.model.families`). Its parameters are
            frozen and it stays in eval mode even when this wrapper trains (its own dropout and drop-path stay off).
        prompt: what to prompt (see `PromptConfig`).
        num_classes: outputs of the linear head.
        path: "prefix" (fast, default) or "tokens" (the reference computation).
        backbone_name: recorded in task checkpoints; defaults to `backbone.vptune_name` or timm's name.
        class_names: optional labels, stored in task checkpoints and used by `predict`.
        head_norm: standardise the head's input with fixed statistics (`FeatureNorm`, set from data by the
            caller; identity until then), so the head's optimisation does not depend on the backbone's feature
            scale and offset.
        grad_checkpointing: recompute blocks in the backward pass rather than storing their activations
            (less memory, more time; exact same results). Also settable later as an attribute.
    """

    def __init__(self, backbone: nn.Module, prompt: PromptConfig, num_classes: int, *,
                 path: str = "prefix", backbone_name: str | None = None,
                 class_names: Sequence[str] | None = None, grad_checkpointing: bool = False,
                 head_norm: bool = False) -> None:
        super().__init__()
        self.adapter: BackboneAdapter = adapter_for(backbone)
        _check_fits(self.adapter, prompt, backbone)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes={num_classes}")
        self.backbone = backbone.requires_grad_(False).eval()
        self.prompt_config = prompt
        self.location = location_for(prompt.location)
        self.path = path
        self.backbone_name = backbone_name or getattr(backbone, "vptune_name", None) or _timm_name(backbone)
        self.class_names = list(class_names) if class_names is not None else None
        self.grad_checkpointing = grad_checkpointing

        self.num_classes = num_classes
        self.embed_dim = self.adapter.embed_dim
        self.num_prefix_tokens = self.adapter.num_prefix_tokens
        self.prompt_blocks = prompt.resolve_layers(self.adapter.depth)
        self._prompt_row = {block: i for i, block in enumerate(self.prompt_blocks)}
        if prompt.enabled and prompt.init == "cls" and prompt.num_tokens != num_classes:
            raise ValueError(f"PromptConfig.init='cls' starts prompt j at class j's mean [CLS] embedding, so num_tokens "
                             f"must equal the number of classes ({num_classes}), got {prompt.num_tokens}")
        self.prompts = self.build_prompts(prompt) if prompt.enabled else None
        self.head_norm: nn.Module = FeatureNorm(self.embed_dim) if head_norm else nn.Identity()
        self.head = nn.Linear(self.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

        self.prefix_blocks = self._plan_prefix_blocks()
        self._kv_cache: dict[int, torch.Tensor] = {}
        # a training loss may read the real tokens entering one block (DA-VPT's guidance): set `observed_block`, and
        # each training forward leaves them in `observed` (B, prefix + m, d)
        self.observed_block: int | None = None
        self.observed: torch.Tensor | None = None
        self._kv_cache_key: tuple | None = None

    @classmethod
    def from_timm(cls, model_name: str, prompt: PromptConfig, num_classes: int, *, pretrained: bool = False,
                  path: str = "prefix", **timm_kwargs) -> "PromptedModel":
        """Build the backbone with `timm.create_model(model_name, pretrained=..., **timm_kwargs)` and wrap it."""
        import timm

        backbone = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **timm_kwargs)
        return cls(backbone, prompt, num_classes, path=path, backbone_name=model_name)

    # ----------------------------------------------------------------------------------------------- set-up
    def build_prompts(self, prompt: PromptConfig) -> Prompts:
        """One prompt set per prompted block, each of that block's width (a hierarchical backbone's stages differ)."""
        widths = [self.adapter.width_at(block) for block in self.prompt_blocks]
        if len(set(widths)) > 1 and prompt.shared:
            raise ValueError(f"PromptConfig.shared=True shares one prompt between blocks of widths {sorted(set(widths))} "
                             f"on this {self.adapter.family} backbone; prompt blocks of one stage (layers), or leave "
                             f"shared off")
        if len(set(widths)) > 1 and prompt.project:
            raise ValueError(f"PromptConfig.project maps prompts to one width, but the prompted blocks of this "
                             f"{self.adapter.family} backbone have widths {sorted(set(widths))}; leave project unset")
        shapes = [self.location.prompt_shape(self.adapter, prompt.num_tokens, prompt.project or width)
                  for width in widths[:1 if prompt.shared else None]]
        kv_width = self._kv_width(prompt)
        return Prompts(prompt, self.prompt_blocks, shapes[0][0], [dim for _, dim in shapes], widths[0],
                       self.adapter.patch_size, depth=self.adapter.depth, kv_width=kv_width)

    def _kv_width(self, prompt: PromptConfig) -> int:
        """The keys|values width of the key-value prompts (`PromptConfig.kv_tokens`), 0 without them."""
        if not prompt.kv_tokens:
            return 0
        widths = {self.adapter.kv_width(block) for block in self.prompt_blocks}
        if not self.adapter.supports_extra_kv or len(widths) > 1:
            raise ValueError(f"PromptConfig.kv_tokens (E2VPT's key-value prompts) is not supported on "
                             f"{self.adapter.family} backbones; use them on a ViT or Eva backbone")
        return widths.pop()

    def _plan_prefix_blocks(self) -> frozenset[int]:
        """Blocks that can run in prefix form: they hold prompt slots whose outputs nobody reads (the next block
        replaces them, patch merging drops them, or the head reads nothing of them)."""
        if self.prompts is None or not self.location.is_tokens:
            return frozenset()
        depth = self.adapter.depth
        last_unread = self.prompt_config.pooling not in READS_PROMPTS  # the head may read the prompts' outputs
        unread, held = set(), False
        for i in range(self.prompt_blocks[0], depth):
            held = held or self.is_prompted(i)
            if held and ((i == depth - 1 and last_unread) or i + 1 in self._prompt_row or self.drops_prompts_after(i)):
                unread.add(i)
            held = held and not self.drops_prompts_after(i)
        unknown = sorted({type(self.adapter.blocks[i]).__name__ for i in unread if not self.adapter.supports_prefix(i)})
        if unknown:
            warnings.warn(f"vptune: the prefix fast path does not know block type(s) {unknown}; those blocks run "
                          f"the reference 'prompts as tokens' way (same result, no speed-up)", stacklevel=3)
        return frozenset(i for i in unread if self.adapter.supports_prefix(i))

    def is_gated(self, block: int) -> bool:
        """Whether a gate sets how far `block` changes the prompt slots (gated prompts; not across a patch merging,
        which changes the slots' width)."""
        return self.prompts.gate_logits is not None and not self.adapter.merges_after(block)

    def gated_slots(self, block: int, entered: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
        """Gated prompts: the slots leave `block` as g * what the block made of them + (1 - g) * what entered."""
        gate = self.prompts.gate(block).to(left.dtype)
        return gate * left + (1 - gate) * entered

    def drops_prompts_after(self, block: int) -> bool:
        """Whether the prompt slots' outputs of `block` are dropped before the next block (patch merging, with
        `PromptConfig.merge` "drop")."""
        return self.prompt_config.merge == "drop" and self.adapter.merges_after(block)

    @property
    def path(self) -> str:
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        if value not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {value!r}")
        self._path = value

    @property
    def labels(self) -> list[str]:
        """What each output index is called: the class names, or the indices themselves when none were given."""
        return self.class_names or [str(k) for k in range(self.num_classes)]

    @property
    def family(self) -> str:
        """The backbone family's name ("vit", "eva"), recorded in task checkpoints."""
        return self.adapter.family

    def train(self, mode: bool = True) -> "PromptedModel":
        """Train prompts and head; the frozen backbone stays in eval mode, as in the original VPT."""
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Prompts (+ projection) and head: what an optimizer should get."""
        return (p for p in self.parameters() if p.requires_grad)

    @property
    def data_config(self) -> dict:
        """Input size and normalisation of the backbone (`backbone_data_config`)."""
        return backbone_data_config(self.backbone)

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> logits (B, num_classes)."""
        return self.forward_from_stem(self.stem(images))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> what the head reads (B, embed_dim), the final normed [CLS] by default."""
        return self.features_from_stem(self.stem(images))

    def prompt_tokens(self, batch_size: int) -> torch.Tensor | list[torch.Tensor]:
        """The prompt each prompted block gets, in token space: (num_blocks, B or 1, length, d) (a list of (B or 1,
        length, d_i) when the blocks' widths differ); indexed by `prompt_row`. The learned tokens,
        or for "prepend-pixel" the learned pixel patches through the frozen patch embedding. In the backbone's
        dtype: a backbone held in bf16 gets bf16 tokens (fp32 masters stay in `self.prompts`)."""
        prompts = self.prompts(batch_size)
        if isinstance(prompts, list):  # blocks of different widths (Swin)
            return [self.location.to_tokens(self, row.to(self.adapter.dtype)) for row in prompts]
        return self.location.to_tokens(self, prompts.to(self.adapter.dtype))

    def prompt_tokens_at(self, block: int) -> torch.Tensor:
        """The prompt tokens block `block` gets, (p, d) (no dropout: as at inference)."""
        return self.prompt_tokens(1)[self.prompt_row(block)][0]

    def is_prompted(self, block: int) -> bool:
        return block in self._prompt_row

    def prompt_row(self, block: int) -> int:
        """Index of `block` among the prompted blocks (the first axis of `prompt_tokens`)."""
        return self._prompt_row[block]

    @property
    def stem_depth(self) -> int:
        """How many leading blocks run exactly as in the backbone, on the image tokens alone.

        They are the blocks before the first prompted one (all but the last, which computes [CLS] only, when
        there is no prompt). With the backbone frozen and no random augmentation their output is a fixed
        function of the image, so training can compute it once per image (`stem`) and run the rest from
        there (`forward_from_stem`): for a "last K" prompt depth most of the forward pass is skipped.
        """
        if self.prompts is None:
            return self.adapter.depth - 1
        return self.location.stem_depth(self)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> tokens entering the first block (B, prefix + m, d)."""
        if self.prompts is None:
            return self.adapter.embed(images)
        return self.location.embed(self, images)

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> tokens (B, prefix + m, d) after the first `stem_depth` blocks."""
        x = self.embed(images)
        for i in range(self.stem_depth):
            x = self.run_block(self.adapter.block, i, x)
        return x

    def forward_from_stem(self, tokens: torch.Tensor) -> torch.Tensor:
        """`stem` output (B, prefix + m, d) -> logits (B, num_classes): `forward` = this after `stem`."""
        return self.classify(self.features_from_stem(tokens))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """What the pooling read (B, embed_dim) -> logits (B, num_classes): the head (after `head_norm`)."""
        return self.head(self.head_norm(features))

    def features_from_stem(self, x: torch.Tensor) -> torch.Tensor:
        """`stem` output (B, prefix + m, d) -> what the head reads (B, d): the final normed [CLS], or a mean of
        final normed tokens (`PromptConfig.pooling`)."""
        if self.prompts is None:
            x, prompt_outputs = self.run_plain(x), None
        else:
            x, prompt_outputs = self.location.run_blocks(self, x)
        return self.adapter.pool(x, self.prompt_config.pooling, prompt_outputs)

    def blocks_after_stem(self) -> range:
        return range(self.stem_depth, self.adapter.depth)

    def queries_at(self, block: int) -> int | None:
        """1 at the last block when the head reads [CLS] only (no other token's output is needed), else None."""
        return 1 if block == self.adapter.depth - 1 and self.prompt_config.pooling == "cls" else None

    def observe(self, block: int, x: torch.Tensor, slots: int = 0) -> None:
        """Keep the real tokens of `x` entering `block` (leaving out the `slots` prompt slots after the prefix tokens)
        when a training loss asked for that block's."""
        if block != self.observed_block or not self.training:
            return
        start = self.adapter.num_prefix_tokens
        self.observed = torch.cat([x[:, :start], x[:, start + slots:]], dim=1) if slots else x

    def run_block(self, fn: Callable[..., torch.Tensor], block: int, *args) -> torch.Tensor:
        """fn(block, *args) (an adapter's `block` or `prefix_block`), recomputed in the backward pass when gradient
        checkpointing is on and gradients flow."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, block, *args, use_reentrant=False)
        return fn(block, *args)

    def run_plain(self, x: torch.Tensor) -> torch.Tensor:
        """No prompt tokens (a linear probe; "concat-channel", whose prompt is in the embedding): the blocks after
        the stem."""
        for i in self.blocks_after_stem():
            x = self.run_plain_block(i, x)
        return x

    def run_plain_block(self, block: int, x: torch.Tensor) -> torch.Tensor:
        """Block `block` without prompts; the last computes [CLS] only, when the head reads nothing else and the
        adapter knows the block."""
        if self.queries_at(block) and self.adapter.supports_prefix(block):
            return self.run_block(self.adapter.prefix_block, block, x, None, 1)
        return self.run_block(self.adapter.block, block, x)

    # ---------------------------------------------------------------------------------- prompt K/V cache
    def kv_cache_usable(self, x: torch.Tensor) -> bool:
        """Cache prompt K/V only when nothing can change them within this call and no gradient is needed."""
        params = list(self.prompts.parameters())
        needs_grad = torch.is_grad_enabled() and any(q.requires_grad for q in params)
        # Under torch.compile the K/V are computed in the graph (p tokens: cheap): a cache keyed on the prompts'
        # versions would make every optimizer step a new guard, i.e. a recompile of the evaluation graph.
        if self.training or needs_grad or torch.compiler.is_compiling():
            return False
        # Parameters bump `_version` on every in-place update (optimizer step, load_state_dict).
        key = (tuple((id(q), q.data_ptr(), q._version) for q in params), x.dtype, x.device,
               torch.is_autocast_enabled(x.device.type))
        if key != self._kv_cache_key:
            self._kv_cache.clear()
            self._kv_cache_key = key
        return True

    def prompt_kv(self, block: int, prompts: torch.Tensor, cache: bool = False) -> torch.Tensor:
        """The keys|values `block` attends to besides the image's (B or 1, p [+ kv_tokens], kv width): those of
        `prompts`, then the block's learned key-value prompts if any (cached per block when `cache`)."""
        if not cache:
            return self._block_kv(block, prompts)
        if block not in self._kv_cache:
            self._kv_cache[block] = self._block_kv(block, prompts)
        return self._kv_cache[block]

    def _block_kv(self, block: int, prompts: torch.Tensor) -> torch.Tensor:
        kv = self.adapter.prompt_kv(block, prompts)
        learned = self.extra_kv(block)
        return kv if learned is None else torch.cat([kv, learned.expand(len(kv), -1, -1)], dim=1)

    def extra_kv(self, block: int) -> torch.Tensor | None:
        """`block`'s learned key-value prompts (1, kv_tokens, kv width), or None."""
        if self.prompts is None or self.prompts.kv is None or not self.is_prompted(block):
            return None
        return self.prompts.kv[self.prompts.row(block)][None].to(self.adapter.dtype)

    def clear_cache(self) -> None:
        """Drop cached prompt keys/values (they are also dropped automatically when prompts change)."""
        self._kv_cache.clear()
        self._kv_cache_key = None

    # ------------------------------------------------------------------------------------ prompts from data
    def _frozen_outputs(self, images: torch.Tensor, through: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(i, tokens entering block i) for blocks 0..through, then (through + 1, its output), without prompts."""
        x = self.adapter.embed(images)
        for i in range(through + 1):
            yield i, x
            x = self.adapter.block(i, x)
        yield through + 1, x

    def _owns_prompt(self, block: int) -> bool:
        """Whether `block` has its own prompt row to set (with shared prompts, only the first prompted block)."""
        return self.is_prompted(block) and not (self.prompt_config.shared and block != self.prompt_blocks[0])

    @torch.no_grad()
    def init_prompts_from_patches(self, images: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set each prompted block's prompt to `num_tokens` prototypes of the patch tokens that block receives
        from `images` (B, 3, H, W) through the frozen backbone without prompts: the centroids of k-means
        (k = num_tokens) over those tokens (`PromptConfig.init="patches"`, the prototype init of Self-Prompt
        Tuning, Wang et al. 2024).

        Why: the paper's random prompts are tokens no block has seen, attended to by every [CLS] from the first
        step; prototypes are typical content of this task's images, so training starts from features like the
        backbone's own (docs/recipe.md). Centroids rather than single sampled tokens: a sampled token can be one
        image's detail (a defect, an object part) that every image then attends to: on a hold-out defect-detection
        task sampled tokens reached 0.743 test top-1, prototypes 0.830 (three seeds).
        """
        if self.prompts is None or self.prompt_config.location != "prepend" or self.prompt_config.project:
            raise ValueError("init_prompts_from_patches needs prepended prompts without projection")
        p = self.prompt_config.num_tokens
        for i, x in self._frozen_outputs(images.to(self.prompts.device), self.prompt_blocks[-1]):
            if i < self.adapter.depth and self._owns_prompt(i):
                patches = x[:, self.num_prefix_tokens:].flatten(0, 1).float()  # (B * m, d), fp32 under autocast
                self.prompts.rows()[self.prompts.row(i)].copy_(kmeans(patches, p, generator))
        self.clear_cache()

    @torch.no_grad()
    def init_prompts_from_classes(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Set prompt j of each prompted block to the mean [CLS] token that block puts out, through the frozen
        backbone without prompts, for the images of class j (`PromptConfig.init="cls"`, the paper's prototype init;
        per block, as the original's "cls-nolastl"). The [CLS] a block receives is the same for every image at
        block 0, so the one it puts out is used. batches: (images (B, 3, H, W), labels (B,)) over the training set.
        With shared prompts, the first prompted block's prototypes serve every block."""
        p = self.prompt_config.num_tokens
        if self.prompts is None or self.prompt_config.init != "cls":
            raise ValueError("init_prompts_from_classes needs a model built with PromptConfig(init='cls')")
        if not self.adapter.has_class_token:
            raise ValueError("PromptConfig.init='cls' starts prompts at class means of the [CLS] token, and this "
                             "backbone has none; use init='patches'")
        sums = torch.zeros_like(self.prompts.tokens)
        counts = torch.zeros(p, device=sums.device)
        for images, labels in batches:
            labels = labels.to(sums.device)
            counts += torch.bincount(labels, minlength=p)[:p]
            for i, x in self._frozen_outputs(images.to(sums.device), self.prompt_blocks[-1]):
                if i > 0 and self._owns_prompt(i - 1):  # x is block i - 1's output
                    sums[self.prompts.row(i - 1)].index_add_(0, labels, x[:, 0].float())
        if bool((counts == 0).any()):
            missing = (counts == 0).nonzero().flatten().tolist()
            raise ValueError(f"init='cls' needs training images of every class; none of class(es) {missing}")
        self.prompts.tokens.copy_(sums / counts[None, :, None])
        self.clear_cache()


PromptedViT = PromptedModel  # the name of releases that knew one backbone family; task folders and code keep working


def kmeans(points: torch.Tensor, k: int, generator: torch.Generator | None = None,
           iterations: int = 20) -> torch.Tensor:
    """k centroids (k, d) of points (n, d) by Lloyd's algorithm from k distinct random points (drawn with
    `generator`; with fewer than k points, some repeat). A centroid that loses all its points stays where it was."""
    start = torch.randperm(len(points), generator=generator)[:k] if len(points) >= k \
        else torch.randint(len(points), (k,), generator=generator)
    centroids = points[start].clone()
    for _ in range(iterations):
        nearest = torch.cdist(points, centroids).argmin(dim=1)
        counts = torch.bincount(nearest, minlength=k).unsqueeze(1)
        sums = torch.zeros_like(centroids).index_add_(0, nearest, points)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


class FeatureNorm(nn.Module):
    """(x - mean) / std with fixed statistics (buffers, saved with the task), set once from data by `set_`.

    Not a BatchNorm: the same in training and at inference, and independent of how a batch is made up.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def set_(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# --------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ParameterCount:
    """What trains and what stays frozen, in numbers of parameters."""

    prompts: int
    head: int
    other_trainable: int
    backbone: int

    @property
    def trainable(self) -> int:
        return self.prompts + self.head + self.other_trainable

    @property
    def percent_of_backbone(self) -> float:
        return 100.0 * self.trainable / self.backbone if self.backbone else float("inf")

    def __str__(self) -> str:
        lines = [f"prompts           {self.prompts:>12,}",
                 f"head              {self.head:>12,}"]
        if self.other_trainable:
            lines.append(f"other trainable   {self.other_trainable:>12,}")
        share = f"{self.percent_of_backbone:.3f}% of the backbone" if self.backbone else "backbone size not recorded"
        lines += [f"trainable total   {self.trainable:>12,}  ({share})",
                  f"backbone          {self.backbone:>12,}"]
        return "\n".join(lines)


def count_parameters(model: PromptedModel) -> ParameterCount:
    """Trainable parameters (prompts, head, anything else unfrozen) against the backbone's size."""
    prompts = sum(p.numel() for p in model.prompts.parameters()) if model.prompts is not None else 0
    head = sum(p.numel() for p in model.head.parameters())
    other = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    return ParameterCount(prompts=prompts, head=head, other_trainable=other, backbone=backbone)


# ----------------------------------------------------------------------------------------------- checks
def backbone_data_config(backbone: nn.Module) -> dict:
    """timm's data config (input size, mean, std, interpolation) of a backbone. The input size is the one the
    backbone is built for: timm keeps its architecture's default there even when img_size was overridden."""
    from timm.data import resolve_model_data_config

    return {**resolve_model_data_config(backbone), "input_size": (3, *backbone.patch_embed.img_size)}


def _check_fits(adapter: BackboneAdapter, prompt: PromptConfig, backbone: nn.Module) -> None:
    """ValueError in one line when this family cannot do what the prompt config asks."""
    name = _timm_name(backbone)
    if prompt.enabled and prompt.location not in adapter.locations:
        raise ValueError(f"PromptConfig.location={prompt.location!r} is not supported on {adapter.family} backbones "
                         f"({name}); use one of {', '.join(adapter.locations)}")
    if prompt.pooling not in adapter.poolings and prompt.pooling != "cls":
        raise ValueError(f"PromptConfig.pooling={prompt.pooling!r} is not supported on {adapter.family} backbones "
                         f"({name}); use one of {', '.join(adapter.poolings)}")
    if prompt.pooling not in adapter.poolings:
        raise ValueError(f"backbone {name!r} has no class token, so PromptConfig.pooling='cls' has nothing to read; "
                         f"use pooling='image-pool' (the mean of the image tokens)")


def _timm_name(backbone: nn.Module) -> str:
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(backbone).__name__
