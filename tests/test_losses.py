import math

import pytest
import torch
import torch.nn.functional as F

from igkd import losses
from igkd.errors import ConfigError


def test_kd_matches_the_hand_formula():
    torch.manual_seed(0)
    s, t, T = torch.randn(4, 10), torch.randn(4, 10), 2.5
    p_t = F.softmax(t / T, 1)
    expected = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T**2
    assert losses.kd_loss(s, t, T).item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses.kd_loss(t, t, T).item() == pytest.approx(0, abs=1e-6)


def test_attention_maps_are_unit_norm_and_at_forms():
    f = torch.randn(3, 64, 8, 8)
    a = losses.attention_map(f)
    assert a.shape == (3, 64) and torch.allclose(a.norm(dim=1), torch.ones(3))
    g = torch.randn(3, 96, 8, 8)  # channels may differ, positions must not
    paper = losses.at_loss(f, g)
    assert paper.item() == pytest.approx((a - losses.attention_map(g)).pow(2).mean().item())
    assert paper.item() <= 4 / 64  # why gamma * AT is tiny in the paper's form
    zag = losses.at_loss(f, g, "zagoruyko")
    assert zag.item() == pytest.approx(
        500 * (a - losses.attention_map(g)).norm(dim=1).mean().item(), rel=1e-5
    )
    with pytest.raises(ConfigError, match="at_form='l1'"):
        losses.at_loss(f, g, "l1")


def test_objective_weights():
    torch.manual_seed(1)
    z, zt, y = torch.randn(5, 10), torch.randn(5, 10), torch.randint(0, 10, (5,))
    f, ft = torch.randn(5, 8, 4, 4), torch.randn(5, 8, 4, 4)
    m = losses.method("KD_IG_AT")
    total, parts = m.loss(z, y, zt, f, ft)
    expected = 0.01 * parts["kd"] + 0.99 * parts["ce"] + 0.8 * parts["at"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    plain, parts = losses.method("student").loss(z, y)
    assert set(parts) == {"ce"} and plain.item() == pytest.approx(F.cross_entropy(z, y).item())


def test_presets_are_the_papers():
    assert losses.PRESETS["KD_IG"] == losses.Method(alpha=0.01, temperature=2.5, overlay_prob=0.1)
    assert losses.PRESETS["IG_AT"].gamma == 0.8 and losses.PRESETS["IG_AT"].alpha == 0
    assert not losses.PRESETS["IG"].needs_teacher and losses.PRESETS["AT"].needs_teacher
    assert len(losses.PRESETS) == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"overlay_prob": 1.5}, "overlay_prob=1.5"),
        ({"alpha": 2.0}, "alpha=2.0"),
        ({"gamma": -0.1}, "gamma=-0.1"),
    ],
)
def test_bad_settings_name_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        losses.method("KD", **kwargs)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match="KD_IG_AT"):
        losses.method("distill")
    assert losses.method("KD", temperature=None).temperature == 2.5
    assert math.isclose(losses.method("KD", alpha=0.1).alpha, 0.1)
