import json
import subprocess
import sys

import pytest
import torch

from igkd import cli, models


def run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "igkd", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_evaluate_prints_accuracy_per_class_and_count(imagefolder_cifar, tmp_path, capsys):
    root, _ = imagefolder_cifar
    ckpt = tmp_path / "s.pt"
    torch.save(models.student(4.1).state_dict(), ckpt)
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 30 and 0 <= out["accuracy"] <= 100 and len(out["per_class"]) == 10
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root)]) == 0
    text = capsys.readouterr().out
    assert "% top-1 on 30 images" in text and "airplane" in text


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.pt", "no checkpoint file"),
        (lambda p: (p / "x.pt").write_text("not a model") and p / "x.pt", "not a readable"),
        (lambda p: torch.save(models.teacher().state_dict(), p / "t.pt") or p / "t.pt", "keeps 19"),
    ],
    ids=["missing", "not-a-checkpoint", "teacher-is-not-a-student"],
)
def test_evaluate_errors_are_one_line(make, message, tmp_path, imagefolder_cifar):
    root, _ = imagefolder_cifar
    proc = run("evaluate", "--checkpoint", str(make(tmp_path)), "--data", str(root))
    assert proc.returncode == 2
    assert proc.stderr.startswith("igkd: error:") and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_evaluate_without_data_says_where_to_put_it(tmp_path):
    ckpt = tmp_path / "s.pt"
    torch.save(models.student(4.1).state_dict(), ckpt)
    proc = run("evaluate", "--checkpoint", str(ckpt), "--data", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and "no CIFAR-10 under" in proc.stderr
    assert "Traceback" not in proc.stderr
