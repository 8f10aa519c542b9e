"""Property-based checks (hypothesis): random and corrupted inputs give the project's own errors with a message,
never a crash inside torch or a silently wrong model."""
import functools
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import make_tiny_vit  # noqa: E402

from vptune import PromptConfig, PromptedViT, TrainConfig, VptuneError, load_task, save_task  # noqa: E402
from vptune.training import load_train_config  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# anything YAML or JSON can hold, including what breaks careless code: NaN, huge numbers, nesting, odd text
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["all", "first 2", "last 3", "0,2", "auto", "no", "-1"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                          max_size=3), max_leaves=6)


def has_message(err: Exception) -> bool:
    return len(str(err).strip()) > 10


# ----------------------------------------------------------------------------------------------- PromptConfig
PROMPT_FIELDS = list(PromptConfig.__dataclass_fields__)


@SETTINGS
@given(st.dictionaries(st.sampled_from(PROMPT_FIELDS + ["bogus"]), values, max_size=4))
def test_prompt_config_from_any_dict_is_valid_or_a_value_error(data):
    try:
        config = PromptConfig.from_dict(data)
        config.resolve_layers(12)
    except ValueError as err:  # PromptConfig's own (model/ imports nothing of vptune but itself)
        assert has_message(err) and "PromptConfig" in str(err)


# ----------------------------------------------------------------------------------------- TrainConfig via YAML
TRAIN_FIELDS = list(TrainConfig.__dataclass_fields__)


@SETTINGS
@given(st.dictionaries(st.sampled_from(TRAIN_FIELDS + ["bogus"]), values, max_size=5) | values)
def test_train_config_from_any_yaml_is_valid_or_a_config_error(data):
    import yaml

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "settings.yaml"
        path.write_text(yaml.safe_dump(data))
        try:
            load_train_config(path).resolved()
        except VptuneError as err:
            assert has_message(err)


@SETTINGS
@given(st.binary(max_size=200))
def test_train_config_from_any_bytes_is_valid_or_a_config_error(blob):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "settings.yaml"
        path.write_bytes(blob)
        try:
            load_train_config(path).resolved()
        except VptuneError as err:
            assert has_message(err)


# ------------------------------------------------------------------------------------ task.json and safetensors
@functools.lru_cache(maxsize=None)
def saved_task() -> tuple[Path, torch.nn.Module, torch.Tensor]:
    backbone = make_tiny_vit(depth=2)
    model = PromptedViT(backbone, PromptConfig(num_tokens=3, layers="all"), num_classes=4, head_norm=True)
    folder = Path(tempfile.mkdtemp(prefix="vptune-prop-")) / "task"
    save_task(model, folder)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return folder, backbone, model.eval()(images)


def load_copy(mutate) -> None:
    """Copy the saved task, mutate the copy, load it: a project error, or a model that answers as the original."""
    original, backbone, expected = saved_task()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "task"
        shutil.copytree(original, folder)
        mutate(folder)
        try:
            model = load_task(folder, backbone=backbone)
        except VptuneError as err:
            assert has_message(err)
            return
        with torch.no_grad():
            got = model.eval()(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
        torch.testing.assert_close(got, expected, msg="a changed task file loaded as a different model, silently")


def json_paths(meta, prefix=()):
    for key, value in meta.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from json_paths(value, prefix + (key,))


@SETTINGS
@given(st.data())
def test_a_corrupted_task_json_is_refused_or_harmless(data):
    meta = json.loads((saved_task()[0] / "task.json").read_text())
    paths = sorted(json_paths(meta))
    edits = data.draw(st.lists(st.tuples(st.sampled_from(paths), st.booleans(), values), min_size=1, max_size=3))

    def mutate(folder):
        changed = json.loads((folder / "task.json").read_text())
        for path, delete, value in edits:
            node = changed
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                if delete:
                    node.pop(path[-1], None)
                else:
                    node[path[-1]] = value
        (folder / "task.json").write_text(json.dumps(changed, allow_nan=True))

    load_copy(mutate)


@SETTINGS
@given(st.data())
def test_a_corrupted_weights_file_is_refused(data):
    size = (saved_task()[0] / "prompt.safetensors").stat().st_size
    cut = data.draw(st.one_of(st.none(), st.integers(0, size - 1)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), max_size=4))

    def mutate(folder):
        blob = bytearray((folder / "prompt.safetensors").read_bytes())
        for at, xor in flips:
            blob[at] ^= xor
        (folder / "prompt.safetensors").write_bytes(bytes(blob[:cut] if cut is not None else blob))

    load_copy(mutate)
