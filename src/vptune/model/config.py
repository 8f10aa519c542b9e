"""`PromptConfig`: what to prompt, where, and how (VPT, Jia et al. 2022).

The config is plain data that round-trips through JSON (it is stored next to the weights in `task.json`).
It validates what it can on its own; the checks that need the backbone (block indices against its depth)
happen in `resolve_layers`, called when a model is built.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence, Union

MODES = ("shallow", "deep")
LOCATIONS = ("prepend", "add", "prepend-pixel", "concat-channel")
INITS = ("xavier", "patches", "cls", "zeros", "normal")
POOLINGS = ("cls", "image-pool", "prompt-pool", "global-pool")
MERGES = ("drop", "tile")  # what prompt slots do at a hierarchical backbone's patch merging (Swin)
TOKEN_LOCATIONS = ("prepend", "prepend-pixel")    # prompts that are tokens of the sequence
PIXEL_LOCATIONS = ("prepend-pixel", "concat-channel")  # prompts learned in the image's pixel space

# `layers` accepts None (the mode's default), "all", "first K", "last K", or explicit block indices.
LayersSpec = Union[None, str, Sequence[int]]
# K may carry a minus sign so that "first -1" is refused rather than read as "first 1"; a hyphen right after the
# word ("last-2") is still a separator.
_LAYER_WORDS = re.compile(r"^\s*(first|last)(?:-|[\s:_]*)(-?\d+)\s*$")


@dataclass
class PromptConfig:
    """Which prompts to learn.

    Args:
        num_tokens: prompt length p per prompted block (0 turns prompting off: a linear probe).
        mode: "shallow" (one prompt, inserted once and carried through every later block) or
            "deep" (a distinct prompt at the input of each prompted block, replacing the previous one).
        location: "prepend" (extra tokens after [CLS] and any register tokens), "add" (one learned vector
            per existing token position, added element-wise; its length comes from the backbone), "prepend-pixel"
            (p learned pixel patches, embedded by the frozen patch embedding, then inserted as "prepend" does) or
            "concat-channel" (p learned input channels concatenated to the image; the patch embedding keeps its
            pretrained weights for the image's channels and learns new ones, starting at zero, for the prompt's;
            shallow only).
        layers: blocks that get a prompt. None: block 0 for shallow, every block for deep. Also "all",
            "first K", "last K", or block indices (0-based) as a list or as text "0,1,5" (as typed on a command
            line or in YAML). Shallow takes exactly one block.
        dropout: prompt dropout, applied after the projection, an independent mask per image.
        project: if set, prompts live in this smaller dimension and a learned Linear maps them to the
            backbone's width (the original's "prompt projection").
        init: "xavier" (uniform(-v, v), v = sqrt(6 / (3 * patch_h * patch_w + dim)), the paper's rule; prompts in
            pixel space start as unit-variance noise, the scale of a normalised image's pixels),
            "cls" (prompt j of each prompted block starts at the mean [CLS] token that block puts out for class j's
            training images, the paper's prototype init; num_tokens must equal the number of classes; set from data
            by `PromptedModel.init_prompts_from_classes`),
            "patches" (each block's prompt starts at k-means prototypes of the patch tokens training images
            bring to that block through the frozen backbone: set from data by
            `PromptedModel.init_prompts_from_patches`, which the trainer calls; xavier until then; prepend without
            projection only), "zeros", or "normal" (std `init_std`).
        init_std: standard deviation for init="normal".
        pooling: what the head reads after the final norm: "cls" (the paper's default), "image-pool" (the mean of
            the image tokens), "prompt-pool" (the mean of the prompts' outputs) or "global-pool" (all tokens).
        shared: deep only: one prompt for every prompted block (the paper's "deep-shared") instead of one each.
        merge: hierarchical backbones (Swin) only: what prompt slots carried to the end of a stage do at patch
            merging: "drop" (the paper: "ignored during patch merging stages") or "tile" (the original code: tiled
            4x along channels through the merge's norm and reduction, carried into the next stage).
        fourier: the share of each block's prompt tokens that enter through a 2-D Fourier transform (VFPT, Zeng et
            al. 2024): the first round(fourier * p) tokens T of a block's prompt become Re(F_tokens(F_width(T))), the
            rest stay as learned; no extra parameters. 0 (VPT) to 1 (every token); prepended prompts only.
        gated: shallow only: a learned gate per block from the prompted one on (gated prompt tuning, Yoo et al.
            2023): the prompt slots leave block i as g_i * (the block's output) + (1 - g_i) * (what entered it),
            g_i = sigmoid(a learned logit, started at -10), so each block changes the prompts only as far as that
            helps.
        kv_tokens: E2VPT's key-value prompts (Han et al. 2023): this many learned keys and values added to the
            attention of every prompted block, beside the prompt tokens' own (they ask no queries and have no
            outputs: a learned prefix of the attention). 0: none (VPT). Prepended prompts only.
        segments: E2VPT's segment-wise pruning: each prompt token is cut into this many segments of its width, and
            `Prompts.segment_mask` (saved with the task) says which segments are kept; a pruned segment is held at
            zero. 0: no segments (no mask). Prepended prompts only.
    """

    num_tokens: int = 10
    mode: str = "deep"
    location: str = "prepend"
    layers: LayersSpec = None
    dropout: float = 0.0
    project: int | None = None
    init: str = "xavier"
    init_std: float = 0.02
    pooling: str = "cls"
    shared: bool = False
    merge: str = "drop"
    fourier: float = 0.0
    gated: bool = False
    kv_tokens: int = 0
    segments: int = 0

    def __post_init__(self) -> None:
        self.layers = _normalise_layers(self.layers)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and the allowed values for anything malformed."""
        if not isinstance(self.num_tokens, int) or isinstance(self.num_tokens, bool) or self.num_tokens < 0:
            raise ValueError(f"PromptConfig.num_tokens must be an integer >= 0 (0 = no prompt), got {self.num_tokens!r}")
        _check_choice("mode", self.mode, MODES)
        _check_choice("location", self.location, LOCATIONS)
        _check_choice("init", self.init, INITS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("merge", self.merge, MERGES)
        if not isinstance(self.shared, bool):
            raise ValueError(f"PromptConfig.shared must be true or false, got {self.shared!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"PromptConfig.dropout must be a float in [0, 1), got {self.dropout!r}")
        if self.project is not None and (not isinstance(self.project, int) or self.project <= 0):
            raise ValueError(f"PromptConfig.project must be None or a positive integer (projection dim), "
                             f"got {self.project!r}")
        if not (isinstance(self.init_std, (int, float)) and self.init_std > 0):
            raise ValueError(f"PromptConfig.init_std must be a positive number, got {self.init_std!r}")
        if self.init in ("patches", "cls") and (self.location != "prepend" or self.project is not None):
            raise ValueError(f"PromptConfig.init={self.init!r} starts prompts as the backbone's own tokens, so it needs "
                             f"location='prepend' and no projection; use init='xavier' here")
        if self.location in PIXEL_LOCATIONS and self.project is not None:
            raise ValueError(f"PromptConfig.project: location={self.location!r} prompts live in pixel space and the "
                             f"frozen patch embedding maps them to tokens; leave project unset")
        if self.location == "concat-channel" and (self.mode != "shallow" or self.layers not in (None, [0])):
            raise ValueError("PromptConfig.location='concat-channel' adds input channels to the image, which exist "
                             "before the first block only: use mode='shallow' with layers unset (or [0])")
        if self.pooling == "prompt-pool" and (self.location not in TOKEN_LOCATIONS or not self.enabled):
            raise ValueError(f"PromptConfig.pooling='prompt-pool' reads the prompts' outputs, so it needs prompts "
                             f"that are tokens (location in {TOKEN_LOCATIONS}, num_tokens > 0); got "
                             f"location={self.location!r}, num_tokens={self.num_tokens}")
        if not (isinstance(self.fourier, (int, float)) and not isinstance(self.fourier, bool)
                and 0.0 <= self.fourier <= 1.0):
            raise ValueError(f"PromptConfig.fourier is the share of prompt tokens through the Fourier transform, a "
                             f"number from 0 to 1, got {self.fourier!r}")
        if self.fourier and self.location != "prepend":
            raise ValueError(f"PromptConfig.fourier transforms prompt tokens, so it needs location='prepend'; got "
                             f"location={self.location!r}")
        if not isinstance(self.kv_tokens, int) or isinstance(self.kv_tokens, bool) or self.kv_tokens < 0:
            raise ValueError(f"PromptConfig.kv_tokens must be a whole number >= 0 (learned keys and values per "
                             f"prompted block), got {self.kv_tokens!r}")
        if self.kv_tokens and (self.location != "prepend" or not self.enabled):
            raise ValueError(f"PromptConfig.kv_tokens adds learned keys and values beside prepended prompt tokens; "
                             f"it needs location='prepend' and num_tokens > 0, got location={self.location!r}, "
                             f"num_tokens={self.num_tokens}")
        if not isinstance(self.segments, int) or isinstance(self.segments, bool) or self.segments < 0:
            raise ValueError(f"PromptConfig.segments must be a whole number >= 0 (segments of each prompt token's "
                             f"width that pruning may remove; 0 = none), got {self.segments!r}")
        if self.segments and (self.location != "prepend" or not self.enabled):
            raise ValueError(f"PromptConfig.segments masks parts of prepended prompt tokens; it needs "
                             f"location='prepend' and num_tokens > 0, got location={self.location!r}, "
                             f"num_tokens={self.num_tokens}")
        if not isinstance(self.gated, bool):
            raise ValueError(f"PromptConfig.gated must be true or false, got {self.gated!r}")
        if self.gated and (self.mode != "shallow" or self.location not in TOKEN_LOCATIONS):
            raise ValueError(f"PromptConfig.gated gates what each block does to prompts carried through it, so it "
                             f"needs mode='shallow' and prompts that are tokens (deep prompts are replaced at every "
                             f"block); got mode={self.mode!r}, location={self.location!r}")
        if self.shared and self.mode != "deep":
            raise ValueError("PromptConfig.shared=True shares one prompt between the prompted blocks of VPT-deep; "
                             "use mode='deep' (shallow has one prompted block)")
        _check_layers_syntax(self.layers)

    @property
    def enabled(self) -> bool:
        return self.num_tokens > 0

    def resolve_layers(self, depth: int) -> tuple[int, ...]:
        """The sorted block indices that get a prompt, for a backbone with `depth` blocks."""
        if not self.enabled:
            return ()
        spec = self.layers
        if spec is None:
            blocks = [0] if self.mode == "shallow" else list(range(depth))
        elif isinstance(spec, str):
            blocks = _parse_layer_words(spec, depth)
        else:
            blocks = list(spec)
        bad = [i for i in blocks if not 0 <= i < depth]
        if bad:
            raise ValueError(f"PromptConfig.layers: block index {bad[0]} is out of range for a backbone with "
                             f"{depth} blocks (allowed 0..{depth - 1})")
        if not blocks:
            raise ValueError("PromptConfig.layers resolves to no block while num_tokens > 0; "
                             "name at least one block, or set num_tokens=0 for no prompt")
        if len(set(blocks)) != len(blocks):
            raise ValueError(f"PromptConfig.layers lists a block twice: {spec!r}")
        if self.mode == "shallow" and len(blocks) != 1:
            raise ValueError(f"PromptConfig.layers: mode='shallow' inserts one prompt at one block, got "
                             f"{len(blocks)} blocks {sorted(blocks)}; use mode='deep' to prompt several blocks")
        return tuple(sorted(blocks))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"PromptConfig: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"PromptConfig.{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _normalise_layers(spec: LayersSpec) -> LayersSpec:
    """Block indices written as text ("0,1,5", "3") or a tuple become a list of ints; anything else is kept."""
    if isinstance(spec, tuple):
        return list(spec)
    if isinstance(spec, str):
        parts = [part.strip() for part in spec.split(",")]
        if all(part.lstrip("-").isdigit() for part in parts):
            return [int(part) for part in parts]
    return spec


def _check_layers_syntax(spec: LayersSpec) -> None:
    if spec is None:
        return
    if isinstance(spec, str):
        words = _LAYER_WORDS.match(spec)
        if spec.strip() != "all" and not words:
            raise ValueError(f"PromptConfig.layers must be None, 'all', 'first K', 'last K' or a list of block "
                             f"indices, got {spec!r}")
        if words and int(words.group(2)) < 1:
            raise ValueError(f"PromptConfig.layers={spec!r}: K must be a whole number >= 1 ('first K' prompts the "
                             f"first K blocks, 'last K' the final K), got {int(words.group(2))}")
        return
    if not isinstance(spec, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in spec):
        raise ValueError(f"PromptConfig.layers must be None, 'all', 'first K', 'last K' or a list of integer "
                         f"block indices, got {spec!r}")
    negative = [i for i in spec if i < 0]
    if negative:  # Python's from-the-end meaning would depend on the backbone's depth; 'last K' says it plainly
        raise ValueError(f"PromptConfig.layers: block indices count from 0, got {negative[0]} in {list(spec)}; "
                         f"for the final blocks use 'last K'")


def _parse_layer_words(spec: str, depth: int) -> list[int]:
    if spec.strip() == "all":
        return list(range(depth))
    which, count = _LAYER_WORDS.match(spec).groups()
    k = int(count)
    if not 1 <= k <= depth:
        raise ValueError(f"PromptConfig.layers={spec!r}: K must be in 1..{depth} for a backbone with {depth} blocks")
    return list(range(k)) if which == "first" else list(range(depth - k, depth))


__all__ = ["PromptConfig", "MODES", "LOCATIONS", "INITS", "POOLINGS"]
