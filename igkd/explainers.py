"""IG beside four other attribution methods, all through Captum, with each one's cost per image.

The paper shows, for one test image, the teacher's IG next to vanilla gradients, SmoothGrad, "LRP"
(approximated by Captum's LayerConductance) and GradientSHAP (paper.md §2; the published
`plot_explainability.py`). `explain` computes one method's maps, `compare` all of them on the same
images with the time each took. Every map is reduced as the IG store's are: sum over the input
channels of |attribution|, (N, H, W), so the maps can be set side by side.

Settings are the published script's unless stated: IG and LayerConductance at 50 Gauss-Legendre
steps from the zero baseline in the model's input space (for the teacher, the CIFAR-10 mean colour),
GradientSHAP with Captum's 5 samples from the same baseline, LayerConductance at the last
`features` module (the teacher's 1280 x 4 x 4 output, shown upsampled by nearest neighbour, so its
map has 4 x 4 blocks). Two choices differ from the script, and say so in their names:
- every method explains the true class (the script's vanilla gradients took the top logit);
- SmoothGrad is Smilkov et al.'s: the average gradient (Captum `Saliency`) over 50 noisy copies with
  noise sd 0.15 of the pixel range. The script wrapped IG in the NoiseTunnel with Captum's default
  sd 1.0 in normalised units (about 0.25 of the range), 50 x 50 passes per image;
  `smoothgrad_of="integrated_gradients"` and `smoothgrad_sigma=0.25` reproduce it.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from igkd.data import CIFAR10_STD, normalize
from igkd.errors import ConfigError
from igkd.models import input_space

# Attribution method key -> its name in tables and figures (paper.METHODS: distillation methods).
EXPLAINERS: dict[str, str] = {
    "integrated_gradients": "IG (IntegratedGradients)",
    "saliency": "vanilla gradients (Saliency)",
    "smoothgrad": "SmoothGrad (NoiseTunnel)",
    "layer_conductance": 'LayerConductance (the paper\'s "LRP")',
    "gradient_shap": "GradientSHAP (GradientShap)",
}

# ... and how the figures label them, shortly.
SHORT: dict[str, str] = {
    "integrated_gradients": "IG",
    "saliency": "vanilla gradients",
    "smoothgrad": "SmoothGrad",
    "layer_conductance": '"LRP" (LayerConductance)',
    "gradient_shap": "GradientSHAP",
}


@dataclass(frozen=True)
class Settings:
    """The methods' settings (see the module docstring for where each comes from).

    `n_steps`: IG and LayerConductance quadrature points; `nt_samples`: SmoothGrad's noisy copies;
    `smoothgrad_sigma`: their noise sd as a share of the pixel range [0, 1]; `smoothgrad_of`:
    "saliency" (SmoothGrad) or "integrated_gradients" (the published script's); `shap_samples`:
    GradientSHAP's samples; `layer`: LayerConductance's module, an index of `model.features` or a
    submodule name; `batch_size`: interpolants per forward pass (Captum's internal_batch_size);
    `seed`: the noise of SmoothGrad and GradientSHAP.
    """

    n_steps: int = 50
    nt_samples: int = 50
    smoothgrad_sigma: float = 0.15
    smoothgrad_of: str = "saliency"
    shap_samples: int = 5
    layer: int | str = -1
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_steps", "nt_samples", "shap_samples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}; use a positive integer")
        if not (isinstance(self.smoothgrad_sigma, int | float) and self.smoothgrad_sigma > 0):
            raise ConfigError(
                f"smoothgrad_sigma={self.smoothgrad_sigma!r}; use a positive share of the pixel "
                "range (Smilkov et al.: 0.1-0.2)"
            )
        if self.smoothgrad_of not in ("saliency", "integrated_gradients"):
            raise ConfigError(
                f"smoothgrad_of={self.smoothgrad_of!r}; use 'saliency' or 'integrated_gradients'"
            )

    def passes(self, method: str) -> int:
        """Forward-and-backward passes per image that `method` makes with these settings."""
        _check_method(method)
        return {
            "integrated_gradients": self.n_steps,
            "saliency": 1,
            "smoothgrad": self.nt_samples
            * (self.n_steps if self.smoothgrad_of == "integrated_gradients" else 1),
            "layer_conductance": self.n_steps + 1,  # Captum evaluates both ends of each step
            "gradient_shap": self.shap_samples,
        }[method]

    def describe(self, method: str) -> str:
        """The settings of `method` in a few words, for the cost table."""
        _check_method(method)
        return {
            "integrated_gradients": f"{self.n_steps} Gauss-Legendre steps, zero baseline",
            "saliency": "|gradient| of the true class's logit",
            "smoothgrad": f"{self.nt_samples} copies, noise sd {self.smoothgrad_sigma:g} of the "
            f"pixel range, over {self.smoothgrad_of}",
            "layer_conductance": f"{self.n_steps} steps at features[{self.layer}]"
            if isinstance(self.layer, int)
            else f"{self.n_steps} steps at {self.layer}",
            "gradient_shap": f"{self.shap_samples} samples, zero baseline",
        }[method]


def differentiable(model: nn.Module) -> nn.Module:
    """`model` itself, or, when an earlier pass under `torch.inference_mode` left inference tensors
    among its parameters (converting weights to channels_last there does), a deep copy with
    ordinary ones: autograd, and so every attribution method, refuses inference tensors."""
    if any(p.is_inference() for p in model.parameters()):
        import copy

        return copy.deepcopy(model)
    return model


def _check_method(method: str) -> None:
    if method not in EXPLAINERS:
        raise ConfigError(f"method={method!r}; use one of {', '.join(EXPLAINERS)}")


def _inputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images (N, 3, H, W) -> float32 in `model`'s input space."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ConfigError(f"images have shape {tuple(images.shape)}; expected (N, 3, H, W)")
    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ConfigError("float images must lie in [0, 1]; pass uint8 or [0, 1] pixels")
    return normalize(x) if input_space(model) else x


def _layer(model: nn.Module, layer: int | str) -> nn.Module:
    try:
        return model.features[layer] if isinstance(layer, int) else model.get_submodule(layer)
    except (AttributeError, IndexError, TypeError):
        raise ConfigError(
            f"layer={layer!r} is not a module of {type(model).__name__}; use an index of "
            "model.features or a name from model.named_modules()"
        ) from None


def _sigma(model: nn.Module, share: float) -> float:
    """A noise sd of `share` of the pixel range, in `model`'s input space."""
    return share / float(np.mean(CIFAR10_STD)) if input_space(model) else share


def _attribute(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, s: Settings
) -> torch.Tensor:
    import captum.attr as ca

    baseline = torch.zeros_like(x)
    if method == "integrated_gradients":
        return ca.IntegratedGradients(model).attribute(
            x, baselines=baseline, target=y, n_steps=s.n_steps, internal_batch_size=s.batch_size
        )
    if method == "saliency":
        return ca.Saliency(model).attribute(x, target=y, abs=True)
    if method == "smoothgrad":
        if s.smoothgrad_of == "saliency":
            inner, extra = ca.Saliency(model), {"abs": False}
        else:
            inner = ca.IntegratedGradients(model)
            extra = {"baselines": baseline, "n_steps": s.n_steps}
        per_batch = max(1, s.batch_size // (s.n_steps if s.smoothgrad_of != "saliency" else 1))
        return ca.NoiseTunnel(inner).attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=s.nt_samples,
            nt_samples_batch_size=min(per_batch, s.nt_samples),
            stdevs=_sigma(model, s.smoothgrad_sigma),
            target=y,
            **extra,
        )
    if method == "layer_conductance":
        lc = ca.LayerConductance(model, _layer(model, s.layer))
        at_layer = lc.attribute(
            x, baselines=baseline, target=y, n_steps=s.n_steps, internal_batch_size=s.batch_size
        )
        if at_layer.dim() != 4:
            raise ConfigError(
                f"layer {s.layer!r} gives attributions of shape {tuple(at_layer.shape)}; pick a "
                "convolutional layer with (N, C, H, W) output"
            )
        # Summed over channels first (as the other maps), then upsampled: blocks of the layer's grid
        summed = at_layer.abs().sum(1, keepdim=True)
        return ca.LayerAttribution.interpolate(summed, tuple(x.shape[-2:]), "nearest")
    return ca.GradientShap(model).attribute(
        x, baselines=baseline, n_samples=s.shap_samples, target=y
    )


def explain(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | int,
    method: str = "integrated_gradients",
    settings: Settings | None = None,
) -> torch.Tensor:
    """One attribution method's maps of `model` for `targets` at `images`, through Captum.

    `images` uint8 (N, 3, H, W) or float in [0, 1], fed in the model's input space
    (`models.input_space`: CIFAR-normalised for the teacher); `targets` (N,) class indices or one
    int. `method` one of `EXPLAINERS`. Returns (N, H, W) float32 on the CPU: the sum over channels
    of |attribution| (LayerConductance: at its layer, upsampled to (H, W) by nearest neighbour).
    The model is put in eval mode. ConfigError for an unknown method or bad input.
    """
    _check_method(method)
    s = settings or Settings()
    model = differentiable(model)
    device = next(model.parameters()).device
    x = _inputs(model, images).to(device)
    y = torch.as_tensor(targets, dtype=torch.long, device=device)
    y = y.expand(len(x)) if y.dim() == 0 else y
    if tuple(y.shape) != (len(x),):
        raise ConfigError(f"targets have shape {tuple(y.shape)}; expected ({len(x)},) or one int")
    x.requires_grad_(True)  # Captum would set it itself, with a warning
    model.eval()
    numpy_state = np.random.get_state()  # Captum's GradientShap draws from NumPy's global RNG
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            np.random.seed(s.seed)
            attributions = _attribute(model, x, y, method, s)
    finally:
        np.random.set_state(numpy_state)
    return attributions.detach().abs().sum(1).float().cpu()


def processor() -> str:
    """The CPU's model name (e.g. 'AMD EPYC'), as the cost table states it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Comparison:
    """`compare`'s result: each method's maps (N, H, W), its time per image (ms) and passes per
    image, where it ran, and each map's Spearman rank correlation with the IG map of its image."""

    maps: dict[str, torch.Tensor]
    ms_per_image: dict[str, float]
    passes: dict[str, int]
    settings: Settings
    device: str
    threads: int
    agreement: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (N,) rho vs IG

    def table(self) -> list[dict]:
        """One row per method: what it is, its settings, passes and ms per image, agreement."""
        return [
            {
                "method": EXPLAINERS[m],
                "settings": self.settings.describe(m),
                "passes per image": self.passes[m],
                "ms per image": self.ms_per_image[m],
                "x vanilla gradients": self.ms_per_image[m] / self.ms_per_image["saliency"]
                if "saliency" in self.ms_per_image
                else float("nan"),
                "Spearman rho with IG (mean)": float(np.mean(self.agreement[m]))
                if m in self.agreement
                else float("nan"),
                "device / threads": f"{self.device} / {self.threads}",
            }
            for m in self.maps
        ]


def rank_agreement(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman's rho between maps `a` and `b` (N, H, W), image by image: (N,) float64; NaN for
    a constant map."""
    from scipy.stats import spearmanr

    if a.shape != b.shape or a.dim() != 3:
        raise ConfigError(
            f"maps of shapes {tuple(a.shape)} and {tuple(b.shape)}; need equal (N, H, W)"
        )
    out = []
    for u, v in zip(a.flatten(1).numpy(), b.flatten(1).numpy(), strict=True):
        constant = np.ptp(u) == 0 or np.ptp(v) == 0
        out.append(np.nan if constant else float(spearmanr(u, v).statistic))
    return np.array(out)


def compare(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    methods: tuple[str, ...] | list[str] = tuple(EXPLAINERS),
    settings: Settings | None = None,
) -> Comparison:
    """Every method of `methods` on the same `images` and `targets` (see `explain`), timed.

    The time of each is one call over all N images (after one untimed forward pass that warms the
    model up), divided by N: milliseconds per image on this device and thread count, which the
    result records. With IG among the methods, `agreement` holds each other method's Spearman rho
    with the IG map of the same image.
    """
    if not methods:
        raise ConfigError("methods is empty; name at least one of " + ", ".join(EXPLAINERS))
    for m in methods:
        _check_method(m)
    s = settings or Settings()
    device = next(model.parameters()).device
    with torch.no_grad():
        model.eval()(_inputs(model, images[:1]).to(device))
    maps, ms = {}, {}
    for m in methods:
        started = time.perf_counter()
        maps[m] = explain(model, images, targets, m, s)
        ms[m] = 1000 * (time.perf_counter() - started) / max(len(images), 1)
    where = processor() if device.type == "cpu" else torch.cuda.get_device_name(device)
    agreement = {}
    if "integrated_gradients" in maps:
        ig = maps["integrated_gradients"]
        agreement = {
            m: rank_agreement(ig, v) for m, v in maps.items() if m != "integrated_gradients"
        }
    return Comparison(
        maps,
        ms,
        {m: s.passes(m) for m in methods},
        s,
        f"{device.type} ({where})",
        torch.get_num_threads(),
        agreement,
    )
