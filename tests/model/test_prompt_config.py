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


@pytest.mark.parametrize("layers, got", [("first -1", "got -1"), ("last -2", "got -2"), ("last:-2", "got -2"),
                                         ("first 0", "got 0"), ("last-0", "got 0")])
def test_layer_count_below_one_is_refused(layers, got):
    # "first -1" once read the minus as a separator and trained the first block
    with pytest.raises(ValueError, match=rf"PromptConfig.layers=.*K must be a whole number >= 1.*{got}$"):
        PromptConfig(layers=layers)


def test_hyphen_after_the_word_is_still_a_separator():
    assert PromptConfig(layers="last-2").resolve_layers(6) == (4, 5)


@pytest.mark.parametrize("layers", ["0,-1", [0, -1], (-3,)])
def test_negative_block_indices_are_refused(layers):
    with pytest.raises(ValueError, match=r"PromptConfig.layers: block indices count from 0, got -\d.*'last K'"):
        PromptConfig(layers=layers)


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
