"""igkd: knowledge distillation with integrated-gradients overlays (Hernandez, Chang & Nordling, 2025).

The few pieces someone applying the method to their own models needs, importable from `igkd`
(loaded on first use, so that `import igkd` stays light):

- losses: `kd_loss` (Hinton, logits (B, K)), `at_loss` and `attention_map` (features (B, C, H, W));
- IG: `integrated_gradients` (attributions (B, 3, H, W) of a teacher's logit), `ig_map` (sum over
  RGB of |IG|, (B, H, W)), `ig_maps` (a whole in-memory set), and the resumable, checked store
  `precompute_ig` / `load_ig_maps` for a set that must survive a kill;
- the overlay: `overlay` (the paper's 0.5 x + 0.5 G on float images) and `augment_batch` (crop,
  flip and overlay on uint8 images with the map moved with its image);
- training: `fit(student, data, Recipe(...), distill=Distillation(method("KD_IG"), teacher,
  maps))`, with `Dataset` the images (N, 3, H, W) uint8 and labels in memory, and `predict`
  (logits (N, K) in the model's own input space);
- `StudentConfig` and `load_model` for the paper's own students and runs.

Chapter 12 ("Use igkd with your own models") distils a teacher that is not the paper's with them.
"""

__version__ = "0.1.0"

# name -> module that defines it: resolved lazily (PEP 562), so `igkd runs ...` starts fast.
_PUBLIC = {
    "kd_loss": "losses",
    "at_loss": "losses",
    "attention_map": "losses",
    "Method": "losses",
    "method": "losses",
    "integrated_gradients": "attribution",
    "ig_map": "attribution",
    "ig_maps": "attribution",
    "precompute_ig": "ig_store",
    "load_ig_maps": "ig_store",
    "overlay": "augment",
    "augment_batch": "augment",
    "fit": "train",
    "predict": "train",
    "Recipe": "train",
    "Distillation": "train",
    "Dataset": "data",
    "StudentConfig": "config",
    "load_model": "models",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f"igkd.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'igkd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
