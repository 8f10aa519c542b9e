"""VFPT (Zeng et al., NeurIPS 2024): VPT-deep whose prompts enter partly through a 2-D Fourier transform.

The reference is the paper's equation computed with numpy's FFT, outside vptune: for each block, the first
round(share x p) prompt tokens T become Re(F_tokens(F_width(T))); a VPT-deep model given those tokens as its
prompts must compute what the VFPT model computes, on the tokens path and on the fast path.
"""
import numpy as np
import pytest
import torch
from conftest import assert_paths_agree, make_tiny_vit, train_config

from vptune import ConfigError, MultiTaskModel, PromptConfig, Predictor, build_model, load_task, save_task, train


def vfpt_model(backbone, share=0.5, path="prefix", **prompt):
    torch.manual_seed(0)
    model = build_model(get_vfpt(share), backbone, PromptConfig(num_tokens=5, **prompt), num_classes=3).double()
    model.path = path
    with torch.no_grad():
        model.prompts.tokens.normal_(0, 0.5)
    return model


def get_vfpt(share):
    from vptune import get_method

    return get_method("vfpt", fourier_share=share)


def fourier_by_numpy(tokens: np.ndarray, k: int) -> np.ndarray:
    out = tokens.copy()
    out[:, :k] = np.fft.fft(np.fft.fft(tokens[:, :k], axis=-1), axis=-2).real  # per block: width, then tokens
    return out


@pytest.mark.parametrize("share,k", [(0.5, 3), (0.2, 1), (1.0, 5)])
@pytest.mark.parametrize("path", ["tokens", "prefix"])
def test_vfpt_equals_vpt_deep_given_the_fourier_transformed_prompts(share, k, path):
    backbone = make_tiny_vit(depth=3).double()
    model = vfpt_model(backbone, share, path)
    reference = build_model("vpt-deep", backbone, PromptConfig(num_tokens=5), num_classes=3).double()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference.prompts.tokens.copy_(torch.from_numpy(fourier_by_numpy(model.prompts.tokens.numpy(), k)))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-10, rtol=0)
    assert model.prompts.fourier_tokens == k


def test_fast_path_equals_tokens_path_in_logits_and_prompt_gradients():
    backbone = make_tiny_vit(depth=3).double()
    build = lambda path: vfpt_model(backbone, path=path)  # noqa: E731
    _, gradient = assert_paths_agree(build, torch.randn(3, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 2, 1]))
    assert gradient.abs().max() > 0


def test_vfpt_adds_no_parameters_to_vpt_deep():
    backbone = make_tiny_vit(depth=3)
    sizes = [sum(p.numel() for p in build_model(m, backbone, PromptConfig(num_tokens=5), 3).trainable_parameters())
             for m in ("vpt-deep", "vfpt")]
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("share", [0, -0.5, 1.5, True, "half"])
def test_a_bad_share_is_one_line(workspace, tmp_path, share):
    with pytest.raises(ConfigError, match="fourier_share must be a number"):
        train(train_config(workspace, tmp_path / "run", method="vfpt", fourier_share=share), quiet=True)
    assert not (tmp_path / "run").exists()


def test_vfpt_trains_saves_predicts_and_serves_beside_a_vpt_deep_task(workspace, tmp_path):
    summary = train(train_config(workspace, tmp_path / "vfpt", method="vfpt", fourier_share=0.4, epochs=1),
                    quiet=True)
    assert summary["method"] == "vfpt" and summary["test_top1"] is not None
    task = load_task(tmp_path / "vfpt" / "best")
    assert task.prompt_config.fourier == 0.4 and task.method.fourier_share == 0.4
    image = workspace / "images" / "red" / "0.png"
    assert len(Predictor.from_task(tmp_path / "vfpt").predict_files([image], top_k=2)[0]["top"]) == 2

    backbone = task.backbone
    deep = build_model("vpt-deep", backbone, PromptConfig(num_tokens=3), 3)
    dirs = {"vfpt": tmp_path / "vfpt" / "best", "deep": save_task(deep, tmp_path / "deep")}
    multi = MultiTaskModel(backbone, dirs)
    assert all(multi._in_shared_pass(model) for model in multi.tasks.values())  # both are K/V prefixes
    images = torch.randn(4, 3, 32, 32)
    names = ["vfpt", "deep", "deep", "vfpt"]
    for j, (out, name) in enumerate(zip(multi(images, names), names)):
        with torch.no_grad():
            alone = load_task(dirs[name], backbone=backbone)(images[j:j + 1])[0]
        torch.testing.assert_close(out, alone, atol=1e-5, rtol=0)
