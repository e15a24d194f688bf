"""The architecture per compression factor (notebook 06): counts from the models themselves, beside
the paper's table (paper.md 1.2-1.3)."""

from __future__ import annotations

import matplotlib
import pytest
from torch import nn

from igkd import architecture, models, paper
from igkd.conclusions import paper_tests as text
from igkd.errors import ConfigError

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def arch():
    return architecture.table()


def test_one_row_per_model_with_the_models_own_counts(arch):
    assert list(arch.index) == ["teacher", *models.COMPRESSION_TABLE]
    for label, row in models.COMPRESSION_TABLE.items():
        assert arch.loc[label, "parameters"] == row.parameters
        assert arch.loc[label, "parameters"] == models.count_parameters(models.student(label))
        assert arch.loc[label, "fp32_mb"] == pytest.approx(row.fp32_mb)
        assert arch.loc[label, "layers_kept"] == models.NUM_FEATURES - row.layers_removed
        assert arch.loc[label, "at_layer"] == models.attention_layer(row.layers_removed)
        assert arch.loc[label, "ratio"] == pytest.approx(row.ratio)
    assert arch.loc["teacher", "parameters"] == models.TEACHER_PARAMETERS
    # the paper's derived table (paper.md 1.2-1.3) agrees with the models, row by row
    assert (arch["parameters"] == arch["paper parameters"]).all()
    assert (arch["conv_layers"] == arch["paper conv_layers"]).all()
    students = arch.drop(index="teacher")
    assert (students["at_layer"] == students["paper at_layer"]).all()
    assert arch.loc["4.1", "at_shape"] == "64x8x8"  # features[9]: 64 channels, 8 x 8


def test_flops_are_positive_and_fall_with_compression(arch):
    by_ratio = arch.sort_values("ratio")
    assert (by_ratio["mflops"] > 0).all()
    assert by_ratio["mflops"].is_monotonic_decreasing and by_ratio["mflops"].is_unique
    assert arch.loc["teacher", "flops_ratio"] == 1
    # early full-resolution modules dominate: FLOPs fall far less than parameters
    assert (arch.drop(index="teacher")["flops_ratio"] < arch.drop(index="teacher")["ratio"]).all()


def test_flops_by_hand_on_a_tiny_model():
    # conv 3->4, 3x3, 'same' on 8x8: 8*8*4 outputs x 27 MACs; Linear 4->2: 8 MACs; 2 FLOPs per MAC
    tiny = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))  # fmt: skip
    assert architecture.count_flops(tiny, input_size=8) == 2 * (8 * 8 * 4 * 27 + 4 * 2)
    assert architecture.count_convolutions(tiny) == 1
    assert tiny.training  # the count leaves the model's mode as it was
    with pytest.raises(ConfigError, match="input_size=0"):
        architecture.count_flops(tiny, input_size=0)


def test_the_paragraph_follows_the_table(arch):
    said = text.architecture(arch)
    assert "parameters 9 of 9" in said and "convolution layers 9 of 9" in said
    assert f"{arch.loc['4.1', 'flops_ratio']:.4g}x fewer FLOPs" in said
    assert "at 8 of 8 compressions" in said  # the paper's speed-ups all exceed the FLOP ratio
    changed = arch.copy()
    changed.loc["2.2", "parameters"] += 1
    changed["paper speed-up"] = 1.0  # speed-ups no larger than the arithmetic
    said = text.architecture(changed)
    assert "parameters 8 of 9" in said and "at 0 of 8 compressions" in said
    assert "more than the arithmetic can explain" not in said
    ax = architecture.plot(arch)
    assert len(ax.get_lines()) == 3
    assert paper.SPEEDUP["4.1"] in list(ax.get_lines()[2].get_ydata())
