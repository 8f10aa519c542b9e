"""Where and how training runs: --device and --precision auto (recorded), bf16 autocast (near fp32, exact resume),
fp16 with its gradient scaler (an overflow is a skipped step, not a divergence), --half-backbone, --compile (equal
to eager, or eager after one log line where it cannot compile), and loader workers that change no result."""
import json
import math

import pytest
import torch
import yaml
from conftest import NARROW, killed_in_epoch, make_tiny_vit, train_args, train_config, without_timings
from safetensors.torch import load_file

from vptune import ConfigError, PromptConfig, PromptedViT, RunDir, train
from vptune.cli import main
from vptune.devices import autocast, maybe_compile


def trained(ws, out, **overrides):
    train(train_config(ws, out, **overrides), quiet=True)
    return RunDir(out)


def prompts_of(run):
    return load_file(str(run.last / "prompt.safetensors"))


def test_auto_picks_the_cpu_and_fp32_here_and_config_yaml_records_them(workspace, tmp_path):
    run = trained(workspace, tmp_path / "run", epochs=1)
    recorded = yaml.safe_load(run.config.read_text())
    assert (recorded["device"], recorded["precision"]) == ("cpu", "fp32")


def test_bf16_logits_and_prompt_gradients_stay_near_fp32():
    # bf16 keeps 8 bits of mantissa (a rounding of ~0.4% per operation); over the 4 blocks of the tiny ViT the
    # errors add up to about 1% of the logits' scale and of the gradient's norm. The bound leaves 3x headroom, and
    # a wrong path (no prompt gradient, a dtype mismatch, autocast off) is off by far more or raises.
    model = PromptedViT(make_tiny_vit(**NARROW), PromptConfig(num_tokens=4, mode="deep"), 5)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def logits_and_gradient(precision):
        model.zero_grad()
        with autocast("cpu", precision):
            logits = model(images)
        logits.float().sum().backward()
        return logits, model.prompts.tokens.grad.clone()

    (exact, exact_grad), (bf16, bf16_grad) = logits_and_gradient("fp32"), logits_and_gradient("bf16")
    assert bf16.dtype == torch.bfloat16 and exact.dtype == torch.float32  # autocast ran
    assert (bf16.float() - exact).abs().max() <= 0.03 * exact.abs().max()
    assert (bf16_grad - exact_grad).norm() <= 0.03 * exact_grad.norm()


def interrupt_and_resume(ws, tmp_path, monkeypatch, **overrides) -> tuple[RunDir, RunDir]:
    """The same 3-epoch run twice: once whole, once killed in its third epoch and resumed."""
    whole = trained(ws, tmp_path / "whole", epochs=3, **overrides)
    with killed_in_epoch(monkeypatch, lambda fit, epoch: epoch == 2):
        trained(ws, tmp_path / "cut", epochs=3, **overrides)
    cut = RunDir(tmp_path / "cut")
    train(train_config(ws, cut.path), resume=True, quiet=True)
    return cut, whole


def test_a_bf16_run_with_a_bf16_backbone_resumes_to_the_same_result(workspace, tmp_path, monkeypatch):
    cut, whole = interrupt_and_resume(workspace, tmp_path, monkeypatch, precision="bf16", half_backbone=True)
    assert without_timings(cut.read_metrics()) == without_timings(whole.read_metrics())
    resumed, uninterrupted = prompts_of(cut), prompts_of(whole)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    assert all(t.dtype == torch.float32 for t in resumed.values())  # fp32 masters, whatever the backbone holds
    fp32 = prompts_of(trained(workspace, tmp_path / "fp32", epochs=3))
    assert not all(torch.equal(resumed[k], fp32[k]) for k in resumed)  # bf16 did run


def test_fp16_overflowing_steps_are_skipped_and_counted_not_taken_for_divergence(workspace, tmp_path, monkeypatch):
    real_scaler = torch.amp.GradScaler
    # a loss scale of 2^60 overflows fp16 (max 65504) in every backward pass: every step is skipped
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device: real_scaler(device, init_scale=2.0 ** 60))
    # cross-fit off: nothing moves, so both epochs' losses are the same learned head's
    run = trained(workspace, tmp_path / "run", precision="fp16", epochs=2, cross_fit=False)
    rows = run.read_metrics()
    steps = math.ceil(json.loads(run.summary.read_text())["data"]["sizes"]["train"] / 8)
    assert [row["skipped_steps"] for row in rows] == [steps, steps]
    assert rows[0]["train_loss"] == pytest.approx(rows[1]["train_loss"], rel=1e-5)  # nothing moved
    state = torch.load(run.state, weights_only=True)
    assert state["scaler"]["scale"] == 2.0 ** (60 - 2 * steps)  # halved at each skip, saved for --resume


def test_an_fp16_run_resumes_to_the_same_result_with_its_scaler(workspace, tmp_path, monkeypatch):
    cut, whole = interrupt_and_resume(workspace, tmp_path, monkeypatch, precision="fp16")
    assert without_timings(cut.read_metrics()) == without_timings(whole.read_metrics())
    assert all(torch.equal(a, b) for a, b in zip(prompts_of(cut).values(), prompts_of(whole).values()))


def test_compiled_training_equals_eager(workspace, tmp_path):
    eager, compiled = (trained(workspace, tmp_path / name, epochs=1, compile=name == "compiled")
                       for name in ("eager", "compiled"))
    a, b = eager.read_metrics()[0], compiled.read_metrics()[0]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4) and a["val_top1"] == b["val_top1"]
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(prompts_of(eager).values(), prompts_of(compiled).values()))


def test_compile_falls_back_to_eager_with_one_log_line_where_it_cannot_compile(vptune_log):
    import torch._dynamo
    import torch._inductor.config as inductor

    model = PromptedViT(make_tiny_vit(**NARROW, seed=3), PromptConfig(num_tokens=2, mode="deep"), 3).eval()
    images = torch.randn(2, 3, 32, 32)
    forward = maybe_compile(model, True)
    torch._dynamo.reset()  # no compiled code of an earlier test may serve this one
    with inductor.patch({"cpp.cxx": ("/nonexistent/c++",)}), torch.no_grad():  # a machine without a C++ compiler
        out, again = forward(images), forward(images)
        assert torch.equal(out, model(images)) and torch.equal(again, out)
    torch._dynamo.reset()
    said = [r.getMessage() for r in vptune_log if "--compile" in r.getMessage()]
    assert len(said) == 1 and "running eagerly" in said[0]


def test_loader_workers_change_no_result_even_with_random_augmentation(workspace, tmp_path):
    # Every crop and flip is drawn from (seed, epoch, image) alone, so they are the same whichever process makes
    # them. (Batches that arrive from a worker sit elsewhere in memory, which can change a matrix product's last
    # bit: equal to rounding, not bit for bit.)
    runs = [trained(workspace, tmp_path / str(workers), recipe="fgvc", num_workers=workers) for workers in (0, 2)]
    for a, b in zip(*(run.read_metrics() for run in runs)):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4) and a["val_top1"] == b["val_top1"]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*(prompts_of(run).values() for run in runs)))


@pytest.mark.parametrize("flags, says", [
    (["--precision", "fp64"], "precision must be one of auto, fp32, bf16, fp16, got 'fp64'"),
    (["--half-backbone"], "half_backbone needs precision bf16 or fp16"),
    (["--half-backbone", "--precision", "bf16", "--method", "full"], "method 'full' trains backbone weights"),
    (["--num-workers", "-1"], "num_workers must be auto or a whole number from 0 to"),
    (["--num-workers", "100000"], "got 100000"),
    (["--num-workers", "some"], "num_workers must be auto or a whole number from 0 to"),
])
def test_bad_precision_settings_are_one_line_errors_before_anything_is_written(workspace, tmp_path, capsys, flags,
                                                                               says):
    out = tmp_path / "run"
    assert main(train_args(workspace, out, *flags)) == 1
    err = capsys.readouterr().err.strip()
    assert says in err and err.startswith("vptune: error:") and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_resume_may_turn_compile_on_but_not_change_the_precision(workspace, tmp_path):
    run = trained(workspace, tmp_path / "run", epochs=1)
    with pytest.raises(ConfigError, match="--precision would change it"):
        train(train_config(workspace, run.path), resume=True, quiet=True, changes={"precision": "bf16"})
    summary = train(train_config(workspace, run.path), resume=True, quiet=True, changes={"compile": True})
    assert summary["epochs"] == 1
