"""Inference's device, precision and compile settings: `Predictor`, `MultiTaskModel` and `evaluate` run where and
how they are told, in 16 bits when asked, and refuse a device or precision this machine cannot run in one line."""

import pytest
import torch
from conftest import make_tiny_vit

from vptune import ConfigError, MultiTaskModel, Predictor, PromptConfig, PromptedViT, save_task
from vptune.inference import evaluate

# bf16 keeps 8 significant bits: each op rounds by up to 2^-8 (0.4%) of its result, and through the tiny ViT's
# blocks that compounds to about 1% of the largest logit (measured: 0.7-1.9%). 5% of the largest logit bounds it
# with room, and is far below the gap between classes that a trained head makes.
BF16_TOLERANCE = 0.05


def assert_bf16_close(fp32: torch.Tensor, bf16: torch.Tensor) -> None:
    """bf16 logits differ from fp32's (autocast ran) by less than the tolerance, and pick the same class wherever
    fp32's top two are further apart than both could move."""
    assert bf16.dtype == torch.float32  # handed back in fp32 whichever precision computed them
    difference = (fp32 - bf16).abs().max().item()
    bound = BF16_TOLERANCE * fp32.abs().max().item()
    assert 0 < difference < bound, (difference, bound)
    top2 = fp32.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * bound
    assert torch.equal(fp32.argmax(-1)[clear], bf16.argmax(-1)[clear])


@pytest.fixture
def model():
    torch.manual_seed(0)
    return PromptedViT(make_tiny_vit(depth=4), PromptConfig(num_tokens=4, mode="deep"), num_classes=10)


@pytest.fixture
def batch():
    return torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without a CUDA GPU, whichever it is."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_predictor_fp32_is_the_model_itself_and_bf16_is_close(model, batch):
    with torch.no_grad():
        eager = model.eval()(batch)
    fp32 = Predictor(model, precision="fp32")
    assert torch.equal(fp32.logits(batch), eager)  # fp32: no autocast, exactly what it computed before
    assert Predictor(model).precision == "fp32"  # auto on a CPU
    bf16 = Predictor(model, precision="bf16")
    assert bf16.precision == "bf16"
    assert_bf16_close(eager, bf16.logits(batch))
    top = bf16.predict(batch[:2], top_k=3)
    assert all(abs(sum(g["probability"] for g in row) - 1) < 1 for row in top) and len(top[0]) == 3


def test_multitask_fp32_is_unchanged_and_bf16_is_close(tmp_path, batch):
    backbone = make_tiny_vit(depth=4)
    dirs = {}
    for k, (name, prompt) in enumerate({"deep": PromptConfig(num_tokens=4), "short": PromptConfig(num_tokens=2),
                                        "shallow": PromptConfig(num_tokens=3, mode="shallow")}.items()):
        torch.manual_seed(k)
        dirs[name] = save_task(PromptedViT(backbone, prompt, num_classes=10), tmp_path / name)
    names = ["deep", "short", "shallow", "deep"] * 4
    auto = MultiTaskModel(backbone, dirs)
    assert auto.precision == "fp32" and auto.device == torch.device("cpu")
    fp32 = MultiTaskModel(backbone, dirs, precision="fp32")(batch, names)
    assert all(torch.equal(a, b) for a, b in zip(fp32, auto(batch, names)))
    bf16 = MultiTaskModel(backbone, dirs, device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    assert_bf16_close(torch.stack(fp32), torch.stack(bf16(batch, names)))


def test_compiled_predictor_gives_the_eager_numbers(model, batch, vptune_log):
    """torch.compile where it works here, the eager fallback (one warning) where it does not: the same logits."""
    eager = Predictor(model, precision="fp32").logits(batch)
    compiled = Predictor(model, precision="fp32", compile=True)
    torch.testing.assert_close(compiled.logits(batch), eager, atol=1e-5, rtol=0)
    assert len([r for r in vptune_log if "--compile" in r.getMessage()]) <= 1


def test_cuda_without_a_gpu_is_one_config_error_before_anything_loads(no_cuda, tmp_path):
    missing = tmp_path / "no-such-task"  # the device is checked first: no "task not found" instead
    with pytest.raises(ConfigError, match="device 'cuda': this machine has no CUDA GPU"):
        Predictor.from_task(missing, device="cuda")
    with pytest.raises(ConfigError, match="device 'cuda': this machine has no CUDA GPU"):
        MultiTaskModel(tasks={"t": missing}, device="cuda")
    with pytest.raises(ConfigError, match="device 'cuda:1': this machine has no CUDA GPU"):
        evaluate(missing, device="cuda:1")


def test_an_unknown_precision_names_the_allowed_ones(model, tmp_path):
    allowed = "precision must be one of auto, fp32, bf16, fp16, got 'fp64'"
    with pytest.raises(ConfigError, match=allowed):
        Predictor(model, precision="fp64")
    with pytest.raises(ConfigError, match=allowed):
        Predictor.from_task(tmp_path / "no-such-task", precision="fp64")
    with pytest.raises(ConfigError, match=allowed):
        MultiTaskModel(precision="fp64")
    with pytest.raises(ConfigError, match=allowed):
        evaluate(tmp_path / "no-such-task", precision="fp64")


def test_from_task_logs_the_device_and_precision_once(model, tmp_path, vptune_log):
    save_task(model, tmp_path / "task")
    predictor = Predictor.from_task(tmp_path / "task", backbone=model.backbone, device="cpu", precision="bf16")
    lines = [r.getMessage() for r in vptune_log if "device" in r.getMessage()]
    assert lines == ["predict: device cpu, precision bf16"]
    assert predictor.device == torch.device("cpu") and predictor.precision == "bf16"
