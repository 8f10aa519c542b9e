import pytest

from vptune import PromptConfig


@pytest.mark.parametrize("kwargs, field", [
    (dict(num_tokens=-1), "num_tokens"),
    (dict(num_tokens=2.5), "num_tokens"),
    (dict(mode="medium"), "mode"),
    (dict(location="append"), "location"),
    (dict(init="glorot"), "init"),
    (dict(dropout=1.5), "dropout"),
    (dict(project=0), "project"),
    (dict(layers="middle 3"), "layers"),
    (dict(layers=[0, "1"]), "layers"),
])
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"PromptConfig.{field}"):
        PromptConfig(**kwargs)


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ValueError, match="'shallow', 'deep'"):
        PromptConfig(mode="wide")


@pytest.mark.parametrize("kwargs, depth, message", [
    (dict(layers=[0, 12]), 12, "block index 12 is out of range"),
    (dict(layers=[]), 12, "resolves to no block"),
    (dict(layers="first 13"), 12, "K must be in 1..12"),
    (dict(layers=[1, 1]), 12, "lists a block twice"),
    (dict(mode="shallow", layers="first 3"), 12, "mode='deep'"),
])
def test_layer_checks_against_depth(kwargs, depth, message):
    with pytest.raises(ValueError, match=message):
        PromptConfig(**kwargs).resolve_layers(depth)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(mode="shallow"), (0,)),
    (dict(mode="deep"), tuple(range(6))),
    (dict(layers="all"), tuple(range(6))),
    (dict(layers="first 2"), (0, 1)),
    (dict(layers="last:2"), (4, 5)),
    (dict(layers=[5, 0, 3]), (0, 3, 5)),
    (dict(mode="shallow", layers=[3]), (3,)),
    (dict(num_tokens=0), ()),
])
def test_resolve_layers(kwargs, expected):
    assert PromptConfig(**kwargs).resolve_layers(6) == expected


def test_round_trip_and_unknown_field():
    cfg = PromptConfig(num_tokens=5, mode="deep", layers=(0, 2), dropout=0.1, project=8)
    assert PromptConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown field.*'colour'"):
        PromptConfig.from_dict({**cfg.to_dict(), "colour": "red"})
