"""Loaded by every pytest run in this repository, including `pytest --nbval notebooks/NN.ipynb`
(which does not load tests/conftest.py): the session's profile and run cache."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config):
    """Tests run in the `ci` profile unless IGKD_PROFILE says otherwise: the notebook kernels nbval
    starts inherit this environment, and `auto` would be `quick` on a CPU (hours).

    The whole session (and those kernels) gets its own run cache, so tests never read or write a
    developer's runs; IGKD_RUNS_KEEP=1 uses $IGKD_RUNS instead. pytest-xdist workers inherit the
    controller's directory, so a teacher or IG store that one worker's notebook made is reused by
    the others (and by the book test); the run cache's locks make that safe."""
    os.environ.setdefault("IGKD_PROFILE", "ci")
    if "IGKD_RUNS_KEEP" not in os.environ and not hasattr(config, "workerinput"):
        os.environ["IGKD_RUNS"] = tempfile.mkdtemp(prefix="igkd-test-runs-")


# Tests that take many seconds on 2 cores (measured with --durations in CI): `make test-fast`
# leaves them, and every notebook and the book build, out (`-m "not slow"`).
SLOW = (
    "tests/test_commands.py",
    "tests/test_published.py::test_published_student_scores_above_80_percent",
    "tests/test_tune.py::test_study_scores_on_validation_and_resumes",
    "tests/test_tune.py::test_a_second_call_waits_for_the_first_instead_of_failing_its_trials",
    "tests/test_tune.py::test_the_journal_stays_locked_while_trials_run",
    "tests/test_attribution.py::test_killed_precompute_resumes_to_the_same_maps",
    "tests/test_attribution.py::test_matches_captum_at_the_papers_settings",
    "tests/test_sweep.py::test_killed_sweep_redoes_only_what_is_missing",
    "tests/test_sweep.py::test_teacher_and_ig_maps_are_made_once_before_the_students",
    "tests/test_sweep.py::test_runs_on_a_scheduler_and_two_worker_processes",
    "tests/test_train.py::test_killed_training_resumes_to_the_same_result",
    "tests/test_runs.py::test_sigkill_and_resume_gives_the_uninterrupted_result",
    "tests/test_paper_recipe.py",
    # 10-37 s each in the CI replay of 2026-12-02 (2-core AVX2 EPYC, beside the book): with them the
    # fast lane's tests summed to 475 s there, without them to 263 s.
    "tests/test_gpu_check.py::test_the_script_runs_end_to_end_on_the_cpu_at_tiny_sizes",
    "tests/test_deploy.py::test_onnx_fp32_logits_match_pytorch",
    "tests/test_deploy.py::test_int8_model_runs_and_mostly_agrees",
    "tests/test_splits.py::test_student_with_validation_and_subset_trains",
    "tests/test_sweep.py::test_igkd_workers_sets_the_local_clusters_cpu_workers",
    "tests/test_sweep.py::test_local_cluster_gives_each_gpu_worker_its_device_and_threads",
    "tests/test_train.py::test_teacher_run_is_cached",
    "tests/test_robustness.py::test_onnx_runtime_backend_agrees_with_torch_and_keeps_its_own_cache",
    "tests/test_distill.py::test_cached_teacher_outputs_are_the_teachers_on_clean_images",
    "tests/test_archive.py::test_round_trip_reproduces_the_runs_and_hits_the_cache",
    "tests/test_paper_tests.py::test_monte_carlo_beside_adds_our_welch_and_paired_tests",
    "tests/test_attribution.py::test_matches_captum_on_real_images",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark the slow tests (before `-m` selects): the list above (a file, a test, or all of a
    test's parameters), the notebooks themselves and every test that needs the executed ci book
    (the `built` fixture)."""
    listed = tuple(f"{s}{sep}" for s in SLOW for sep in ("::", "["))
    for item in items:
        if (
            item.nodeid.split("::")[0].endswith(".ipynb")
            or "built" in getattr(item, "fixturenames", ())
            or item.nodeid in SLOW
            or item.nodeid.startswith(listed)
        ):
            item.add_marker(pytest.mark.slow)
