"""Distilling from a given teacher file (`teacher_checkpoint`, $IGKD_TEACHER): the file's run, its
hash in every dependent cache key, and one-line refusals of bad files and pins."""

from __future__ import annotations

import pytest
import torch

from igkd import models, pipeline, teachers
from igkd.config import StudentConfig
from igkd.errors import CheckpointError, ConfigError
from tests.conftest import tiny_ci_profile


def _teacher_file(path, seed: int):
    torch.manual_seed(seed)
    torch.save(models.teacher().state_dict(), path)
    return path


def test_pin_and_environment(tmp_path, monkeypatch):
    f = _teacher_file(tmp_path / "t.pt", 0)
    sha = models.sha256_of(f)
    assert teachers.parse(f"{f}#sha256={sha.upper()}") == (str(f), sha)
    assert teachers.parse(str(f)) == (str(f), None)
    with pytest.raises(ConfigError, match="64 hex digits"):
        teachers.parse(f"{f}#sha256=abc")
    with pytest.raises(CheckpointError, match="expected 0{64}"):
        teachers.local_file(f"{f}#sha256={'0' * 64}")
    with pytest.raises(CheckpointError, match="is not a file"):
        teachers.local_file(tmp_path / "missing.pt")
    monkeypatch.delenv(teachers.ENV, raising=False)
    assert teachers.given() is None and teachers.given("") is None
    monkeypatch.setenv(teachers.ENV, str(f))
    assert teachers.given() == str(f)
    assert StudentConfig(4.1, "KD", profile="ci").teacher_checkpoint == str(f)


def test_a_file_of_another_architecture_is_refused_before_training(tmp_path, monkeypatch):
    student = tmp_path / "student.pt"
    torch.save(models.student(compression=4.1).state_dict(), student)
    with tiny_ci_profile(monkeypatch, train_size=60) as prof:
        c = StudentConfig(4.1, "KD", profile=prof, teacher_checkpoint=str(student))
        # Refused when the run is planned, before get_or_run makes a student run directory.
        with pytest.raises(CheckpointError) as e:
            pipeline.planned_student(c)
        assert "\n" not in str(e.value) and "features" in str(e.value)
        with pytest.raises(CheckpointError):
            pipeline.student_run(c, progress=False)


def test_students_distil_from_the_file_and_its_hash_keys_their_runs(tmp_path, monkeypatch):
    a, b = _teacher_file(tmp_path / "a.pt", 0), _teacher_file(tmp_path / "b.pt", 1)
    copy_of_a = tmp_path / "copy.pt"
    copy_of_a.write_bytes(a.read_bytes())
    with tiny_ci_profile(monkeypatch, train_size=60) as prof:
        c = StudentConfig(4.1, "KD_IG", profile=prof, teacher_checkpoint=str(a))
        run = pipeline.student_run(c, progress=False)
        teacher = pipeline.planned_teacher(prof, teacher_checkpoint=str(a))
        assert teacher.done and teacher.config["checkpoint_sha256"] == models.sha256_of(a)
        assert run.config["teacher_run"] == teacher.path.name
        ig = pipeline.planned_ig(prof, teacher_checkpoint=str(a))
        assert run.config["ig_run"] == ig.path.name and ig.done
        assert run.metrics["teacher_test_accuracy"] == teacher.metrics["final_test_accuracy"]
        # Content-addressed: the same bytes elsewhere are the same runs; other bytes are not.
        same = pipeline.planned_student(c.replace(teacher_checkpoint=str(copy_of_a)))
        other = pipeline.planned_student(c.replace(teacher_checkpoint=str(b)))
        own = pipeline.planned_student(c.replace(teacher_checkpoint=""))
        assert same.path == run.path and same.done
        assert len({run.path, other.path, own.path}) == 3
        # The plain student does not depend on any teacher.
        plain = StudentConfig(4.1, "student", profile=prof)
        assert (
            pipeline.planned_student(plain.replace(teacher_checkpoint=str(a))).path
            == pipeline.planned_student(plain).path
        )
