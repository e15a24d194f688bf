"""igkd: knowledge distillation with integrated-gradients overlays (Hernandez, Chang & Nordling, 2025)."""

__version__ = "0.1.0"
