"""`make gpu-check` as far as a CPU allows: its argument checks, its one-line stop without CUDA, its
GPU-hour projection, and the whole script at tiny sizes on the CPU (`--cpu`)."""

from __future__ import annotations

import pytest
import torch

from igkd import gpu_check, paths, profiles


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--images", "100"], "--images=100; use a multiple of 64"),
        (["--teacher-steps", "0"], "--teacher-steps=0; use a positive integer"),
        (["--ig-steps", "-1"], "--ig-steps=-1"),
    ],
)
def test_bad_arguments_stop_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_it_stops_with_one_line(capsys):
    assert gpu_check.main([]) == gpu_check.NO_CUDA_EXIT
    err = capsys.readouterr().err.strip()
    assert "no CUDA device" in err and "\n" not in err


def test_projection_scales_the_measured_epochs_to_the_paper_counts():
    experiments = profiles.PROFILES["paper"].experiments
    per_image = {"teacher": 3600 / 50_000, "ig": 7200 / 50_000, "student": 36 / 50_000}  # h/epoch
    parts = dict(gpu_check.projection(per_image, experiments))
    assert parts["teacher, 100 epochs"] == pytest.approx(100)
    assert parts["IG maps, 50,000 images"] == pytest.approx(2)
    ablation = next(h for p, h in parts.items() if p.startswith("ablation"))
    assert ablation == pytest.approx(8 * experiments["ablation_runs"] * 100 * 0.01)
    assert parts["whole paper book"] == pytest.approx(
        sum(h for p, h in parts.items() if p != "whole paper book")
    )


def test_the_script_runs_end_to_end_on_the_cpu_at_tiny_sizes(capsys):
    argv = ["--cpu", "--images", "64", "--teacher-steps", "1", "--student-epochs", "1"]
    assert gpu_check.main([*argv, "--ig-steps", "2"]) == 0
    out = capsys.readouterr().out
    for expected in ("== teacher", "== IG", "fp32 vs AMP", "whole paper book"):
        assert expected in out


def test_only_the_files_with_cuda_tests_are_collected():
    files = {f.name for f in gpu_check.cuda_test_files(paths.REPO_ROOT / "tests")}
    assert {"test_cuda.py", "test_augment.py"} <= files
    assert "test_tune.py" not in files  # imports optuna, which a bare CUDA image lacks
