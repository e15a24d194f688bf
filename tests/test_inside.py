"""Chapter 13 and the additions to 02 and 07: decision distances and misclassification rates
against hand-computed examples, attention-map similarity, the Captum explainers' shapes and
errors, IG-map concentration, and closing paragraphs that follow their numbers. No training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from igkd import attention_figures, decisions, explainers, imagenet_maps, models
from igkd.conclusions import inside
from igkd.errors import ConfigError

# Three samples of class 0 over three classes, worked by hand:
#   [0.6, 0.3, 0.1] right,  margin 0.6 - 0.3 = +0.3,  top2 0.3
#   [0.2, 0.5, 0.3] wrong,  margin 0.2 - 0.5 = -0.3,  top2 0.2
#   [0.4, 0.4, 0.2] a tie:  margin 0.0,               top2 0.0 (argmax picks class 0: right)
PROBS = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
LABELS = np.array([0, 0, 0])


def test_decision_distance_by_hand():
    np.testing.assert_allclose(decisions.decision_distance(PROBS, LABELS), [0.3, -0.3, 0.0])
    np.testing.assert_allclose(decisions.decision_distance(PROBS, LABELS, "top2"), [0.3, 0.2, 0.0])
    # the margin is measured from the true class, whichever it is
    np.testing.assert_allclose(
        decisions.decision_distance(PROBS, np.array([1, 1, 2])), [0.3 - 0.6, 0.5 - 0.3, 0.2 - 0.4]
    )


def test_misclassification_rate_by_hand():
    assert decisions.misclassification_rate(PROBS, LABELS) == pytest.approx(1 / 3)
    assert decisions.misclassification_rate(PROBS, np.array([1, 1, 1])) == pytest.approx(2 / 3)


def test_class_decisions_row_is_the_mean_over_the_class():
    d = decisions.ClassDecisions(
        "m", np.vstack([PROBS, [[0.1, 0.1, 0.8]]]), np.array([0, 0, 0, 2]), 2.5, "margin"
    )
    assert d.row(0) == {
        "samples": 3,
        "misclassification rate": pytest.approx(1 / 3),
        "mean decision distance": pytest.approx(0.0),
    }
    assert d.row(2)["mean decision distance"] == pytest.approx(0.7)
    assert list(d.per_class(("a", "b", "c"))) == ["a", "c"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: decisions.decision_distance(PROBS, LABELS, "euclid"),
        lambda: decisions.decision_distance(PROBS * 2, LABELS),
        lambda: decisions.decision_distance(PROBS, np.array([0, 3, 0])),
        lambda: decisions.samples_per_class(torch.tensor([0, 1]), 0),
    ],
)
def test_decision_inputs_are_checked(call):
    with pytest.raises(ConfigError) as e:
        call()
    assert "\n" not in str(e.value)


def test_softened_and_samples_per_class():
    class Fixed(nn.Module):
        normalized_inputs = False

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.tensor([[2.5, 0.0]]).expand(len(x), 2) + self.w

    p = decisions.softened(Fixed(), torch.zeros(3, 3, 4, 4, dtype=torch.uint8), temperature=2.5)
    np.testing.assert_allclose(p[0], [np.e / (np.e + 1), 1 / (np.e + 1)], rtol=1e-6)
    idx = decisions.samples_per_class(torch.tensor([1, 0, 1, 1, 0, 2]), 2, classes=3)
    assert idx.tolist() == [1, 4, 0, 2, 5]


# --- attention maps --------------------------------------------------------------------------------


def test_cosine_similarity_by_hand():
    a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    b = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    np.testing.assert_allclose(attention_figures.cosine_similarity(a, b), [1 / np.sqrt(2), 1.0])
    with pytest.raises(ConfigError):
        attention_figures.cosine_similarity(a, b[:1])


def test_attention_maps_are_unit_norm_and_alike_for_the_same_model():
    torch.manual_seed(0)
    student = models.student(compression=4.1).eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    maps = attention_figures.attention_maps(student, images, 9)
    assert maps.shape == (3, 8, 8)
    np.testing.assert_allclose(maps.flatten(1).norm(dim=1).numpy(), 1.0, rtol=1e-5)
    other = models.student(compression=4.1).eval()
    result = attention_figures.compare(
        student, {"same": student, "other": other}, images, 9, labels=torch.tensor([0, 1, 2])
    )
    np.testing.assert_allclose(result.similarity["same"], 1.0, rtol=1e-6)
    assert (result.similarity["other"] <= 1 + 1e-9).all() and (result.similarity["other"] > 0).all()
    assert set(result.accuracy) == {"teacher", "same", "other"}
    assert result.difference("same", "other")["diff"] >= 0
    assert attention_figures.one_per_class(torch.tensor([2, 0, 2, 1]), 4) == [1, 3, 0]


# --- explainers ------------------------------------------------------------------------------------


class Tiny(nn.Module):
    """A small CNN with a `features` stack, in [0, 1] input space, for fast Captum calls."""

    normalized_inputs = False

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1)
        )
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.mark.parametrize("method", list(explainers.EXPLAINERS))
def test_every_explainer_gives_one_map_per_image(method):
    torch.manual_seed(0)
    model, images = Tiny(), torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    s = explainers.Settings(n_steps=3, nt_samples=2, shap_samples=2, batch_size=4)
    maps = explainers.explain(model, images, torch.tensor([0, 2]), method, s)
    assert maps.shape == (2, 8, 8) and maps.dtype == torch.float32
    assert (maps >= 0).all() and torch.isfinite(maps).all()
    # the noisy methods are seeded: the same call gives the same maps
    assert torch.equal(maps, explainers.explain(model, images, torch.tensor([0, 2]), method, s))


def test_explainers_work_on_a_model_that_ran_under_inference_mode():
    # train.predict runs under torch.inference_mode and converts the weights to channels_last
    # there, which leaves inference tensors that autograd refuses: a copy is explained instead
    model = Tiny()
    with torch.inference_mode():
        model.to(memory_format=torch.channels_last)
    assert any(p.is_inference() for p in model.parameters())
    maps = explainers.explain(model, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 0, "saliency")
    assert maps.shape == (1, 8, 8)


def test_an_unknown_explainer_is_one_line():
    with pytest.raises(ConfigError) as e:
        explainers.explain(Tiny(), torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 0, "lime")
    assert "lime" in str(e.value) and "integrated_gradients" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError):
        explainers.Settings(n_steps=0)


def test_compare_times_every_method_and_ranks_against_ig():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    s = explainers.Settings(n_steps=2, nt_samples=2, shap_samples=2)
    c = explainers.compare(Tiny(), images, torch.tensor([0, 1]), settings=s)
    assert set(c.maps) == set(explainers.EXPLAINERS) and all(v > 0 for v in c.ms_per_image.values())
    assert set(c.agreement) == set(explainers.EXPLAINERS) - {"integrated_gradients"}
    assert c.passes == {
        "integrated_gradients": 2,
        "saliency": 1,
        "smoothgrad": 2,
        "layer_conductance": 3,
        "gradient_shap": 2,
    }
    rows = c.table()
    assert rows[1]["x vanilla gradients"] == 1.0
    np.testing.assert_allclose(
        explainers.rank_agreement(c.maps["saliency"], c.maps["saliency"]), 1.0
    )


# --- IG maps on the ImageNet subset ----------------------------------------------------------------


def test_mass_in_top_by_hand():
    # 10 pixels; the top 10 % is the largest one: 5 of 10 (0.5), and 1 of 10 when spread evenly
    maps = np.array([[[5, 1, 1, 1, 1, 1, 0, 0, 0, 0]], [[1] * 10]], dtype=float)
    np.testing.assert_allclose(imagenet_maps.mass_in_top(maps, 0.1), [0.5, 0.1])
    np.testing.assert_allclose(imagenet_maps.mass_in_top(maps, 0.2), [0.6, 0.2])
    assert np.isnan(imagenet_maps.mass_in_top(np.zeros((1, 2, 2)))[0])
    with pytest.raises(ConfigError):
        imagenet_maps.mass_in_top(-maps)
    assert imagenet_maps.pick(torch.tensor([3, 1, 3, 3, 1]), 2).tolist() == [1, 4, 0, 2]


# --- the paragraphs follow the numbers --------------------------------------------------------------

RNG = np.random.default_rng(0)
CLOSE = {"AT": 0.9 + 0.01 * RNG.standard_normal(50), "KD_IG": 0.8 + 0.01 * RNG.standard_normal(50)}
FAR = {"AT": 0.7 + 0.01 * RNG.standard_normal(50), "KD_IG": 0.8 + 0.01 * RNG.standard_normal(50)}


def attention(sims, **kw):
    return inside.attention(
        sims, reference="KD_IG", layer="features[9]", data="made-up data", profile="test", **kw
    )


def test_the_attention_paragraph_follows_the_numbers():
    closer, further = attention(CLOSE, teacher_accuracy=90.0), attention(FAR, teacher_accuracy=90.0)
    assert (
        "AT attends more like the teacher" in closer
        and f"{np.mean(CLOSE['AT']):.4g} (AT)" in closer
    )
    assert "AT less like it" in further and closer != further
    untrained = attention(CLOSE, teacher_accuracy=10.0)
    assert "within 5 pp of chance" in untrained and "attends more like" not in untrained
    assert "no reference" in inside.attention(
        {"AT": CLOSE["AT"]}, reference=None, layer="x", data="d", profile="p"
    )


def decision_text(student_distance, rate=0.06, accuracies=None):
    rows = {
        "teacher": {"samples": 50, "misclassification rate": 0.1, "mean decision distance": 0.3},
        "KD_IG": {
            "samples": 50,
            "misclassification rate": rate,
            "mean decision distance": float(np.mean(student_distance)),
        },
    }
    teacher = 0.3 + 0.05 * RNG.standard_normal(50)
    return inside.decisions(
        rows,
        {"teacher": teacher, "KD_IG": teacher + student_distance - 0.3},
        class_name="cat",
        temperature=2.5,
        definition="margin",
        paper=decisions.PAPER,
        data="made-up data",
        profile="test",
        accuracies=accuracies,
    )


def test_the_decisions_paragraph_follows_the_numbers():
    further = decision_text(0.42 + 0.01 * RNG.standard_normal(50))
    nearer = decision_text(0.20 + 0.01 * RNG.standard_normal(50))
    assert "**held**" in further and "**reversed**" in nearer
    assert "paper 0.316" in further and "paper 0.42" in further
    assert "cannot tell the two models apart" in further  # 0.10 vs 0.06 of 50: 2 images
    assert "intervals do not overlap" in decision_text(
        0.42 + 0.0 * RNG.standard_normal(50), rate=0.9
    )
    untrained = decision_text(0.42 + 0.01 * RNG.standard_normal(50), accuracies={"teacher": 10.0})
    assert "chance" in untrained and "**held**" not in untrained
    both = inside.conclusion("A.", "B.")
    assert both.startswith("**Attention.** A.") and "**Decisions.** B." in both


def test_the_attribution_and_imagenet_paragraphs_follow_the_numbers():
    ig = "IG (IntegratedGradients)"
    one = inside.attribution_methods(
        {ig: 100.0, "Saliency": 2.0},
        {"Saliency": 0.8},
        images=3,
        device="cpu (test)",
        threads=1,
        profile="test",
    )
    two = inside.attribution_methods(
        {ig: 100.0, "Saliency": 4.0},
        {"Saliency": 0.2},
        images=3,
        device="cpu (test)",
        threads=1,
        profile="test",
    )
    assert "**100 ms**" in one and "Saliency 2 ms (0.02 x IG)" in one and "0.04 x IG" in two
    assert "much as IG does" in one and "do not agree" in two
    untrained = inside.attribution_methods(
        {ig: 1.0, "S": 1.0},
        {"S": 0.1},
        images=1,
        device="c",
        threads=1,
        profile="t",
        teacher_accuracy=10.0,
    )
    assert "chance" in untrained and "do not agree" not in untrained
    a, b = 0.5 + 0.01 * RNG.standard_normal(8), 0.3 + 0.01 * RNG.standard_normal(8)
    kw = dict(share=0.1, n_steps=50, data="ImageNet32", profile="test")
    more = inside.imagenet_maps(a, b, generated=False, **kw)
    less = inside.imagenet_maps(b, a, generated=False, **kw)
    assert "**more concentrated**" in more and "**more diffuse**" in less
    assert "only shows that the code runs" in inside.imagenet_maps(a, b, generated=True, **kw)
