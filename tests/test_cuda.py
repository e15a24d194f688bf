"""CUDA-only checks, run by `make gpu-check` on a lent GPU (`pytest -m cuda`); skipped elsewhere.
The CPU versions of the same behaviour are tested in the other files."""

from __future__ import annotations

import pytest
import torch

from igkd import attribution, data, models, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    ds = data.load_synthetic("train", n)
    return ds.images, ds.labels


def test_models_give_the_same_logits_on_cuda_and_cpu():
    x, _ = _batch()
    for model in (models.teacher().eval(), models.student(compression=4.1).eval()):
        cpu = train.predict(model, x, True, device="cpu")
        gpu = train.predict(model, x, True, device="cuda")
        torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_integrated_gradients_agree_on_cuda_and_cpu():
    x, y = _batch(4)
    torch.manual_seed(0)
    teacher = models.teacher().eval()
    cpu = attribution.ig_maps(teacher, x, y, n_steps=16)
    gpu = attribution.ig_maps(teacher.cuda(), x, y, n_steps=16)
    assert gpu.device.type == "cpu"  # returned on the CPU, as documented
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-2)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_students_train_on_cuda_in_fp32_and_amp(precision):
    ds = data.load_synthetic("train", 256)
    test = data.load_synthetic("test", 100)
    torch.manual_seed(0)
    student = models.student(compression=4.1)
    recipe = train.Recipe(epochs=2, batch_size=64, optimizer="adam", lr=1e-3, precision=precision)
    m = train.fit(student, ds, recipe, test=test, device="cuda", progress=False)
    assert m["precision"] == precision and 0 <= m["final_test_accuracy"] <= 100
    assert next(student.parameters()).is_cuda
