"""`PromptedViT`: a frozen timm Vision Transformer with learned prompts and a linear head on [CLS].

Token layout inside the blocks (prepend): [CLS, register tokens..., prompt slots (p), patch tokens (m)].
At a block that has a prompt the slots are set to that block's prompt (inserted the first time,
replaced afterwards); at a block without one, whatever the slots hold is carried on. "add" instead adds
the block's prompt element-wise to every existing token.

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
from functools import partial
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from timm.layers import Format, PatchEmbed, nchw_to
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import PIXEL_LOCATIONS, TOKEN_LOCATIONS, PromptConfig
from .attention import prefix_block, prompt_key_values, supports_prefix
from .prompts import Prompts

PATHS = ("prefix", "tokens")
READS_PROMPTS = ("prompt-pool", "global-pool")  # poolings that need the prompts' outputs of the last block


class PromptedViT(nn.Module):
    """A frozen timm `VisionTransformer`, VPT prompts, and a fresh linear head on the final normed [CLS].

    Args:
        backbone: a timm VisionTransformer with a class token. Its parameters are frozen and it stays in
            eval mode even when this wrapper trains (its own dropout and drop-path stay off).
        prompt: what to prompt (see `PromptConfig`).
        num_classes: outputs of the linear head.
        path: "prefix" (fast, default) or "tokens" (the reference computation).
        backbone_name: recorded in task checkpoints; defaults to `backbone.vptune_name` or timm's name.
        class_names: optional labels, stored in task checkpoints and used by `predict`.
        head_norm: standardise the [CLS] embedding before the head with fixed statistics (`FeatureNorm`, set
            from data by the caller; identity until then), so the head's optimisation does not depend on the
            backbone's feature scale and offset.
        grad_checkpointing: recompute blocks in the backward pass rather than storing their activations
            (less memory, more time; exact same results). Also settable later as an attribute.
    """

    def __init__(self, backbone: VisionTransformer, prompt: PromptConfig, num_classes: int, *,
                 path: str = "prefix", backbone_name: str | None = None,
                 class_names: Sequence[str] | None = None, grad_checkpointing: bool = False,
                 head_norm: bool = False) -> None:
        super().__init__()
        _check_backbone(backbone)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes={num_classes}")
        self.backbone = backbone.requires_grad_(False).eval()
        self.prompt_config = prompt
        self.path = path
        self.backbone_name = backbone_name or getattr(backbone, "vptune_name", None) or _timm_name(backbone)
        self.class_names = list(class_names) if class_names is not None else None
        self.grad_checkpointing = grad_checkpointing

        depth = len(backbone.blocks)
        self.embed_dim = backbone.embed_dim
        self.num_prefix_tokens = backbone.num_prefix_tokens
        self.prompt_blocks = prompt.resolve_layers(depth)
        self._prompt_index = {block: i for i, block in enumerate(self.prompt_blocks)}
        if prompt.enabled and prompt.init == "cls" and prompt.num_tokens != num_classes:
            raise ValueError(f"PromptConfig.init='cls' starts prompt j at class j's mean [CLS] embedding, so num_tokens "
                             f"must equal the number of classes ({num_classes}), got {prompt.num_tokens}")
        self.prompts = self._build_prompts(prompt) if prompt.enabled else None
        self.head_norm: nn.Module = FeatureNorm(self.embed_dim) if head_norm else nn.Identity()
        self.head = nn.Linear(self.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

        self._prefix_blocks = self._plan_prefix_blocks(depth)
        self._kv_cache: dict[int, torch.Tensor] = {}
        self._kv_cache_key: tuple | None = None

    @classmethod
    def from_timm(cls, model_name: str, prompt: PromptConfig, num_classes: int, *, pretrained: bool = False,
                  path: str = "prefix", **timm_kwargs) -> "PromptedViT":
        """Build the backbone with `timm.create_model(model_name, pretrained=..., **timm_kwargs)` and wrap it."""
        import timm

        backbone = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **timm_kwargs)
        return cls(backbone, prompt, num_classes, path=path, backbone_name=model_name)

    # ----------------------------------------------------------------------------------------------- set-up
    def _build_prompts(self, prompt: PromptConfig) -> Prompts:
        patch_embed = self.backbone.patch_embed
        patch_h, patch_w = patch_embed.patch_size
        length, dim = prompt.num_tokens, prompt.project or self.embed_dim
        if prompt.location == "add":  # one learned vector per existing token position
            length = self.num_prefix_tokens + patch_embed.num_patches
        elif prompt.location in PIXEL_LOCATIONS:
            _check_plain_patch_embed(patch_embed, prompt.location)
            height, width = patch_embed.img_size
            dim = 3 * patch_h * patch_w if prompt.location == "prepend-pixel" else height * width
        return Prompts(prompt, self.prompt_blocks, length, dim, self.embed_dim, (patch_h, patch_w))

    def _plan_prefix_blocks(self, depth: int) -> frozenset[int]:
        """Blocks that can run in prefix form: they hold prompt slots whose outputs nobody reads."""
        if self.prompts is None or self.prompt_config.location not in TOKEN_LOCATIONS:
            return frozenset()
        first = self.prompt_blocks[0]
        last_unread = self.prompt_config.pooling not in READS_PROMPTS  # the head may read the prompts' outputs
        unread = {i for i in range(first, depth) if (i == depth - 1 and last_unread) or i + 1 in self._prompt_index}
        unknown = sorted({type(self.backbone.blocks[i]).__name__ for i in unread
                          if not supports_prefix(self.backbone.blocks[i])})
        if unknown:
            warnings.warn(f"vptune: the prefix fast path does not know block type(s) {unknown}; those blocks run "
                          f"the reference 'prompts as tokens' way (same result, no speed-up)", stacklevel=3)
        return frozenset(i for i in unread if supports_prefix(self.backbone.blocks[i]))

    @property
    def path(self) -> str:
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        if value not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {value!r}")
        self._path = value

    def train(self, mode: bool = True) -> "PromptedViT":
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
        """Images (B, 3, H, W) -> final normed [CLS] embedding (B, embed_dim)."""
        return self.features_from_stem(self.stem(images))

    def prompt_tokens(self, batch_size: int) -> torch.Tensor:
        """The prompt tokens each prompted block inserts, (num_blocks, B or 1, p, d): the learned tokens, or for
        "prepend-pixel" the learned pixel patches through the frozen patch embedding (its projection and norm, no
        position embedding, as for the paper's prompts). In the backbone's dtype: a backbone held in bf16 gets bf16
        tokens (fp32 masters stay in `self.prompts`)."""
        prompts = self.prompts(batch_size).to(self._dtype)
        if self.prompt_config.location != "prepend-pixel":
            return prompts
        patch_embed = self.backbone.patch_embed
        proj = patch_embed.proj  # a convolution with stride = kernel = patch: a linear map of each flat patch
        return patch_embed.norm(F.linear(prompts, proj.weight.flatten(1), proj.bias))

    @property
    def _dtype(self) -> torch.dtype:
        """The frozen backbone's weights' dtype (float32, or 16 bits with `--half-backbone`)."""
        return self.backbone.patch_embed.proj.weight.dtype

    @property
    def stem_depth(self) -> int:
        """How many leading blocks run exactly as in the backbone, on the image tokens alone.

        They are the blocks before the first prompted one (all but the last, which computes [CLS] only, when
        there is no prompt). With the backbone frozen and no random augmentation their output is a fixed
        function of the image, so training can compute it once per image (`stem`) and run the rest from
        there (`forward_from_stem`): for a "last K" prompt depth most of the forward pass is skipped.
        """
        if self.prompts is None:
            return len(self.backbone.blocks) - 1
        return 0 if self.prompt_config.location == "concat-channel" else self.prompt_blocks[0]

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> tokens (B, prefix + m, d) after the first `stem_depth` blocks."""
        x = self._embed(images)
        for block in self.backbone.blocks[:self.stem_depth]:
            x = self._block(block, x)
        return x

    def forward_from_stem(self, tokens: torch.Tensor) -> torch.Tensor:
        """`stem` output (B, prefix + m, d) -> logits (B, num_classes): `forward` = this after `stem`."""
        return self.classify(self.features_from_stem(tokens))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Final [CLS] embeddings (B, embed_dim) -> logits (B, num_classes): the head (after `head_norm`)."""
        return self.head(self.head_norm(features))

    def features_from_stem(self, x: torch.Tensor) -> torch.Tensor:
        """`stem` output (B, prefix + m, d) -> what the head reads (B, d): the final normed [CLS], or a mean of
        final normed tokens (`PromptConfig.pooling`)."""
        slots = None  # the prompts' final outputs (B, p, d), where the pooling needs them
        location = None if self.prompts is None else self.prompt_config.location
        if location in (None, "concat-channel"):
            x = self._blocks_plain(x)
        elif location == "add":
            x = self._blocks_add(x)
        elif self.path == "tokens":
            x, slots = self._blocks_tokens(x)
        else:
            x, slots = self._blocks_prefix(x)
        return self._pool(x, slots)

    def _pool(self, x: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        bb, pooling = self.backbone, self.prompt_config.pooling
        if pooling == "cls":
            return bb.fc_norm(bb.norm(x[:, 0]))
        tokens = {"image-pool": lambda: x[:, self.num_prefix_tokens:], "prompt-pool": lambda: slots,
                  "global-pool": lambda: x if slots is None else torch.cat([x, slots], dim=1)}[pooling]()
        return bb.fc_norm(bb.norm(tokens).mean(dim=1))

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding, [CLS] and register tokens, position embedding: (B, prefix + m, d)."""
        bb = self.backbone
        if self.prompts is not None and self.prompt_config.location == "concat-channel":
            patches = self._embed_with_channels(images)
        else:
            patches = bb.patch_embed(images)
        return bb.norm_pre(bb.patch_drop(bb._pos_embed(patches)))

    def _embed_with_channels(self, images: torch.Tensor) -> torch.Tensor:
        """"concat-channel": the patch embedding of the image with the p prompt channels concatenated. A convolution
        over 3 + p channels is the image's convolution (pretrained weights) plus the prompt channels' (new weights)."""
        patch_embed, channel_weight = self.backbone.patch_embed, self.prompts.channel_weight
        height, width = patch_embed.img_size
        if tuple(images.shape[-2:]) != (height, width):
            raise ValueError(f"location='concat-channel' learned prompt channels of {height} x {width} pixels, but "
                             f"these images are {tuple(images.shape[-2:])}; resize them to the model's image size")
        channels = self.prompts.dropout(self.prompts.tokens.view(1, -1, height, width))
        x = patch_embed.proj(images) + F.conv2d(channels, channel_weight, stride=patch_embed.proj.stride)
        if patch_embed.flatten:  # then the layout timm's PatchEmbed gives its blocks
            x = x.flatten(2).transpose(1, 2)
        elif patch_embed.output_fmt != Format.NCHW:
            x = nchw_to(x, patch_embed.output_fmt)
        return patch_embed.norm(x)

    def _block(self, fn, *args: torch.Tensor) -> torch.Tensor:
        """fn(*args), recomputed in the backward pass when gradient checkpointing is on and gradients flow."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _blocks_after_stem(self) -> Iterator[tuple[int, nn.Module]]:
        start = self.stem_depth
        return enumerate(self.backbone.blocks[start:], start=start)

    def _blocks_plain(self, x: torch.Tensor) -> torch.Tensor:
        """No prompt tokens (a linear probe; "concat-channel", whose prompt is in the embedding): the blocks after
        the stem; the last computes [CLS] only, when the head reads nothing else and we know the block's type."""
        last = len(self.backbone.blocks) - 1
        for i, block in self._blocks_after_stem():
            if i == last and self.prompt_config.pooling == "cls" and supports_prefix(block):
                block = partial(prefix_block, block, prompt_kv=None, queries=1)
            x = self._block(block, x)
        return x

    def _blocks_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference: prompts are tokens of the sequence, inserted once and replaced at each prompted block.
        Returns the real tokens (B, prefix + m, d) and the prompts' final outputs (B, p, d)."""
        batch, start, p = x.shape[0], self.num_prefix_tokens, self.prompt_config.num_tokens
        prompts = self.prompt_tokens(batch)
        inserted = False
        for i, block in self._blocks_after_stem():
            if i in self._prompt_index:
                rest = x[:, start + p:] if inserted else x[:, start:]
                x = torch.cat([x[:, :start], prompts[self._prompt_index[i]].expand(batch, -1, -1), rest], dim=1)
                inserted = True
            x = self._block(block, x)
        return torch.cat([x[:, :start], x[:, start + p:]], dim=1), x[:, start:start + p]

    def _blocks_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fast path: real tokens (B, prefix + m, d) flow through; prompt slots are kept on the side. Returns the
        real tokens and the prompts' final outputs (None when the last block did not compute them)."""
        batch, start, p = x.shape[0], self.num_prefix_tokens, self.prompt_config.num_tokens
        prompts = self.prompt_tokens(batch)
        use_cache = self._kv_cache_usable(x)
        slots = None  # what the prompt slots hold now: (B or 1, p, d); the stem ends at the first prompt
        last = len(self.backbone.blocks) - 1
        for i, block in self._blocks_after_stem():
            fresh = i in self._prompt_index
            if fresh:
                slots = prompts[self._prompt_index[i]]
            if i in self._prefix_blocks:
                kv = self._prompt_kv(i, block, slots, cache=use_cache and fresh)
                # The head reads [CLS] only: the last block needs no other token's output.
                queries = 1 if i == last and self.prompt_config.pooling == "cls" else None
                x = self._block(partial(prefix_block, block, queries=queries), x, kv)
                slots = None  # their outputs would be replaced or never read
            else:  # slot outputs are carried on into the next block (or read by the head): the full sequence
                h = self._block(block, torch.cat([x[:, :start], slots.expand(batch, -1, -1), x[:, start:]], dim=1))
                x, slots = torch.cat([h[:, :start], h[:, start + p:]], dim=1), h[:, start:start + p]
        return x, slots

    def _blocks_add(self, x: torch.Tensor) -> torch.Tensor:
        """"add": each prompted block's prompt is added element-wise to the tokens entering it."""
        prompts = self.prompts(x.shape[0]).to(self._dtype)
        if prompts.shape[2] != x.shape[1]:
            raise ValueError(f"location='add' learned one prompt vector per token for {prompts.shape[2]} tokens, "
                             f"but these images give {x.shape[1]}; use the image size the model was built for "
                             f"({self.backbone.patch_embed.img_size})")
        for i, block in self._blocks_after_stem():
            if i in self._prompt_index:
                x = x + prompts[self._prompt_index[i]]
            x = self._block(block, x)
        return x

    # ---------------------------------------------------------------------------------- prompt K/V cache
    def _kv_cache_usable(self, x: torch.Tensor) -> bool:
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

    def _prompt_kv(self, index: int, block: nn.Module, slots: torch.Tensor, cache: bool) -> torch.Tensor:
        if not cache:
            return prompt_key_values(block, slots)
        if index not in self._kv_cache:
            self._kv_cache[index] = prompt_key_values(block, slots)
        return self._kv_cache[index]

    def clear_cache(self) -> None:
        """Drop cached prompt keys/values (they are also dropped automatically when prompts change)."""
        self._kv_cache.clear()
        self._kv_cache_key = None

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
        p, last = self.prompt_config.num_tokens, self.prompt_blocks[-1]
        x = self._embed(images.to(self.prompts.tokens.device))
        for i, block in enumerate(self.backbone.blocks[:last + 1]):
            if i in self._prompt_index and not (self.prompt_config.shared and i != self.prompt_blocks[0]):
                patches = x[:, self.num_prefix_tokens:].flatten(0, 1).float()  # (B * m, d), fp32 under autocast
                self.prompts.tokens[self.prompts.row(i)] = kmeans(patches, p, generator)
            x = block(x)
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
        sums = torch.zeros_like(self.prompts.tokens)
        counts = torch.zeros(p, device=sums.device)
        last = self.prompt_blocks[-1]
        for images, labels in batches:
            x, labels = self._embed(images.to(sums.device)), labels.to(sums.device)
            counts += torch.bincount(labels, minlength=p)[:p]
            for i, block in enumerate(self.backbone.blocks[:last + 1]):
                x = block(x)
                if i in self._prompt_index and not (self.prompt_config.shared and i != self.prompt_blocks[0]):
                    sums[self.prompts.row(i)].index_add_(0, labels, x[:, 0].float())
        if bool((counts == 0).any()):
            missing = (counts == 0).nonzero().flatten().tolist()
            raise ValueError(f"init='cls' needs training images of every class; none of class(es) {missing}")
        self.prompts.tokens.copy_(sums / counts[None, :, None])
        self.clear_cache()


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


def count_parameters(model: PromptedViT) -> ParameterCount:
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


def _check_backbone(backbone: nn.Module) -> None:
    if not isinstance(backbone, VisionTransformer):
        raise TypeError(f"PromptedViT needs a timm VisionTransformer (ViT, DeiT, DINO/DINOv2, CLIP-style ViT), got "
                        f"{type(backbone).__name__}; build one with timm.create_model('vit_...') or "
                        f"vptune.backbones.create_backbone")
    if backbone.cls_token is None:
        raise ValueError(f"backbone {_timm_name(backbone)!r} has no class token, but VPT's head reads the final "
                         f"[CLS] embedding; use a ViT built with class_token=True")


def _check_plain_patch_embed(patch_embed: nn.Module, location: str) -> None:
    """Pixel prompts go through the patch embedding by hand: only timm's plain one, whose projection is a linear map
    of each patch, is known to give the same tokens as its own forward."""
    proj = getattr(patch_embed, "proj", None)
    plain = (type(patch_embed) is PatchEmbed and isinstance(proj, nn.Conv2d) and proj.kernel_size == proj.stride
             and proj.padding == (0, 0) and not getattr(patch_embed, "dynamic_img_pad", False))
    if not plain:
        raise ValueError(f"PromptConfig.location={location!r} needs timm's plain PatchEmbed (a stride = kernel "
                         f"convolution without padding); this backbone's is not: use location='prepend'")


def _timm_name(backbone: nn.Module) -> str:
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(backbone).__name__
