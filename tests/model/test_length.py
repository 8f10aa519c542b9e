"""`--num-tokens auto`: 10 prompts per 64 image tokens an attention sees, capped at 1% of the backbone."""
import timm
import pytest

from vptune.model import PromptConfig, adapter_for, auto_num_tokens, count_parameters
from vptune.methods import build_model


def _timm(name, **kwargs):
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()


@pytest.mark.parametrize("img_size, patches, expected", [(112, 64, 10), (224, 256, 40)])
def test_a_vit_gets_10_prompts_per_64_patches(img_size, patches, expected):
    backbone = _timm("vit_small_patch14_dinov2", img_size=img_size)
    assert adapter_for(backbone).num_patches == patches
    assert auto_num_tokens(backbone, PromptConfig()) == expected


def test_the_prompts_stay_under_1_percent_of_the_backbone_where_the_share_would_pass_it():
    backbone = _timm("vit_small_patch14_dinov2", img_size=448)  # 1024 patches: the share alone asks for 160
    p = auto_num_tokens(backbone, PromptConfig())
    assert p < 160

    def prompt_share(length):
        counts = count_parameters(build_model("vpt-deep", backbone, PromptConfig(num_tokens=length, init="xavier"),
                                              num_classes=2))
        return counts.prompts / counts.backbone

    assert prompt_share(p) <= 0.01 < prompt_share(p + 1)  # the longest prompt within the budget
    # one prompted block (VPT-shallow) is a twelfth of the cost: the share holds there
    assert auto_num_tokens(backbone, PromptConfig(mode="shallow")) == 160


def test_windowed_attention_counts_one_window():
    swin = _timm("swin_tiny_patch4_window7_224")  # 7 x 7 windows over 56 x 56 patches
    assert auto_num_tokens(swin, PromptConfig()) == 8  # 49 tokens: 7.7, not the 490 of every patch
    sam = _timm("samvit_base_patch16", img_size=256)  # 16 x 16 patches; 14 x 14 windows in 8 of 12 blocks
    assert auto_num_tokens(sam, PromptConfig()) == 31  # 196 tokens, most blocks' (30.6 halves up)
    assert auto_num_tokens(sam, PromptConfig(layers=[2, 5, 8])) == 40  # only global blocks: 256 tokens
