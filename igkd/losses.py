"""Losses: cross-entropy, Hinton knowledge distillation, attention transfer, and their weighted sum.

The objective is alpha * KD + (1 - alpha) * CE + gamma * AT (paper.md 4), and the paper's eight
methods are presets of (alpha, temperature, overlay probability p, gamma).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from igkd.errors import ConfigError


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton KD: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch.

    Logits (B, K). The T^2 factor keeps the gradient scale independent of T (Hinton et al. 2015).
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis attention (p = 2): mean over channels of F^2, flattened, L2-normalised.

    Features (B, C, H, W) -> (B, H*W), each row of unit norm.
    """
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


def at_loss(
    student_features: torch.Tensor,
    teacher_features: torch.Tensor,
    form: str = "paper",
    beta: float = 1000.0,
) -> torch.Tensor:
    """Attention-transfer loss between feature maps (B, C, H, W) of equal H, W (or maps (B, H*W)).

    `paper`: mean over batch and positions of (A_s - A_t)^2, as the published code computes it.
    Over unit-norm maps this is tiny (at most 4 / (H*W)), so gamma * AT barely moves training.
    `zagoruyko`: beta / 2 * ||A_s - A_t||_2, averaged over the batch (the original paper, beta 1000).
    """
    a_s = student_features if student_features.dim() == 2 else attention_map(student_features)
    a_t = teacher_features if teacher_features.dim() == 2 else attention_map(teacher_features)
    if form == "paper":
        return (a_s - a_t).pow(2).mean()
    if form == "zagoruyko":
        return beta / 2 * (a_s - a_t).norm(p=2, dim=1).mean()
    raise ConfigError(f"at_form={form!r}; use 'paper' or 'zagoruyko'")


@dataclass(frozen=True)
class Method:
    """Weights of one training method: alpha (KD), temperature, overlay probability p, gamma (AT)."""

    alpha: float = 0.0
    temperature: float = 1.0
    overlay_prob: float = 0.0
    gamma: float = 0.0
    at_form: str = "paper"

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.alpha <= 1:
            problems.append(f"alpha={self.alpha!r} (use 0 <= alpha <= 1)")
        if not self.temperature > 0:
            problems.append(f"temperature={self.temperature!r} (use a positive number)")
        if not 0 <= self.overlay_prob <= 1:
            problems.append(f"overlay_prob={self.overlay_prob!r} (use 0 <= p <= 1)")
        if not self.gamma >= 0:
            problems.append(f"gamma={self.gamma!r} (use gamma >= 0)")
        if self.at_form not in ("paper", "zagoruyko"):
            problems.append(f"at_form={self.at_form!r} (use 'paper' or 'zagoruyko')")
        if problems:
            raise ConfigError("bad method setting: " + "; ".join(problems))

    @property
    def needs_teacher(self) -> bool:
        return self.alpha > 0 or self.gamma > 0

    def loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        teacher_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """alpha * KD + (1 - alpha) * CE + gamma * AT, and its parts (detached floats) for logging."""
        ce = F.cross_entropy(logits.float(), labels)
        total, parts = (1 - self.alpha) * ce, {"ce": ce.detach()}
        if self.alpha > 0:
            kd = kd_loss(logits, teacher_logits, self.temperature)
            total = total + self.alpha * kd
            parts["kd"] = kd.detach()
        if self.gamma > 0:
            at = at_loss(features, teacher_features, self.at_form)
            total = total + self.gamma * at
            parts["at"] = at.detach()
        return total, parts


# The paper's ablation (paper.md 4): alpha 0.01, T 2.5, p 0.1, gamma 0.8 where the part is used.
_KD, _IG, _AT = {"alpha": 0.01, "temperature": 2.5}, {"overlay_prob": 0.1}, {"gamma": 0.8}
PRESETS: dict[str, Method] = {
    "student": Method(),
    "KD": Method(**_KD),
    "IG": Method(**_IG),
    "AT": Method(**_AT),
    "KD_IG": Method(**_KD, **_IG),
    "KD_AT": Method(**_KD, **_AT),
    "IG_AT": Method(**_IG, **_AT),
    "KD_IG_AT": Method(**_KD, **_IG, **_AT),
}


def method(name: str, **overrides: float | str | None) -> Method:
    """The preset `name` (student, KD, IG, AT, KD_IG, KD_AT, IG_AT, KD_IG_AT) with overrides.

    Overrides that are None keep the preset's value. Unknown names are a ConfigError listing them.
    """
    if name not in PRESETS:
        raise ConfigError(f"method={name!r} is not one of {', '.join(PRESETS)}")
    base = PRESETS[name]
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - set(base.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown method setting(s) {sorted(unknown)}")
    return Method(**{**base.__dict__, **changes})
