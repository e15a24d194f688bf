"""Measurements that are not runs of the cache, recorded for the summary page: ImageNet scores,
latencies, robustness comparisons and the fix ablation's paired differences.

A notebook that measures one of these turns its result into records (`latency_records`,
`imagenet_records`, `robustness_eval.records`) and saves them with `save_results` to
`<runs>/results/<profile>/<name>.json`; `igkd.report` reads them back with `load_results` and puts
them beside the paper's numbers.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from igkd import paths, profiles
from igkd.errors import ConfigError
from igkd.profile_runs import collect, students_of

RESULT_NAMES = (
    "imagenet",
    "latency",
    "robustness",
    "fixes",
)  # measurements that are not runs of the cache


def results_file(name: str, profile: str | None = None) -> Path:
    """`<runs>/results/<profile>/<name>.json`, where `save_results` writes and the summary reads."""
    if name not in RESULT_NAMES:
        raise ConfigError(f"result name {name!r}; use one of {', '.join(RESULT_NAMES)}")
    return paths.runs_dir() / "results" / profiles.resolve(profile) / f"{name}.json"


def save_results(name: str, records: list[dict], profile: str | None = None) -> Path:
    """Record a notebook's measurements for the summary page; returns the file written.

    `imagenet`: one record per model, {"model": a method name or "teacher", "accuracy" (%),
    "balanced_accuracy" (%), "kappa", "images"} on the teacher-correct subset.
    `latency`: one record per measurement, {"model": "teacher" or a compression label such as
    "4.1", "runtime": "pytorch" | "onnxruntime", "precision": "fp32" | "int8", "batch": int,
    "median_ms": milliseconds per batch}.
    `robustness`: `robustness_eval.records` (notebook 10), one {"kind": "model", ...} per model and
    one {"kind": "difference", "group", "test", "diff", "ci_low", "ci_high", "clean_diff", ...} per
    comparison of the IG overlay family with the others.
    `fixes`: `fixes.records` (notebook 04's fix ablation), one per fix of the published code.
    The environment is stored with the records.
    """
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ConfigError(f"records for {name!r} must be a list of dicts")
    file = results_file(name, profile)
    payload = {
        "name": name,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": profiles.environment(profile),
        "records": records,
    }
    paths.atomic_write_bytes(file, (json.dumps(payload, indent=2) + "\n").encode())
    return file


def load_results(name: str, profile: str | None = None) -> list[dict]:
    """The records `save_results` wrote for `name` in the profile, or [] if none were."""
    file = results_file(name, profile)
    if not file.is_file():
        return []
    return json.loads(file.read_text())["records"]


_FORMATS = {
    "PyTorch fp32": ("pytorch", "fp32"),
    "ONNX fp32": ("onnxruntime", "fp32"),
    "ONNX int8": ("onnxruntime", "int8"),
}


def latency_records(frame: pd.DataFrame) -> list[dict]:
    """`save_results("latency", ...)` records from `latency.latency_table` (index: "teacher" or
    "<label>x", PyTorch fp32) or `deploy.deployment_table` (index: (model, format)), one per
    model, format and `b<B> median (ms)` column."""
    records = []
    for index, row in frame.iterrows():
        name, fmt = index if isinstance(index, tuple) else (index, "PyTorch fp32")
        model = "teacher" if name == "teacher" else str(name).split("x")[0]
        runtime, precision = _FORMATS[fmt]
        for col, value in row.items():
            m = re.fullmatch(r"b(\d+) median \(ms\)", str(col))
            if m and value == value:  # skip NaN
                records.append(
                    {
                        "model": model,
                        "runtime": runtime,
                        "precision": precision,
                        "batch": int(m.group(1)),
                        "median_ms": float(value),
                    }
                )
    return records


def imagenet_records(
    result,
    run_metrics: Mapping[str, dict],
    profile: str | None = None,
    generated: bool = False,
    data_root: str | Path | None = None,
) -> list[dict]:
    """`save_results("imagenet", ...)` records from `imagenet.evaluate`'s result: the teacher, and
    per method the mean over the runs the summary's ablation rows count (4.1x, or the
    profile's ablation regime's size) (preset settings, the
    experiments' recipe and training share; not Monte Carlo draws, tuning trials or notebook 03's
    longer run). `run_metrics`: student name in `result.students` -> its run's metrics with the
    run's folder name under "run". `generated` marks scores on generated images."""
    found = collect(profile, data_root)
    counted = {m["run"] for m in students_of(found, None, found.ablation_size, "ablation")}

    def record(model: str, scores: list) -> dict:
        return {
            "model": model,
            "accuracy": float(np.mean([s.accuracy for s in scores])),
            "balanced_accuracy": float(np.mean([s.balanced_accuracy for s in scores])),
            "kappa": float(np.mean([s.kappa for s in scores])),
            "images": int(scores[0].n),
            "runs": len(scores),
            "generated": generated,
        }

    by_method: dict[str, list] = {}
    for name, m in run_metrics.items():
        if m.get("run") in counted:
            by_method.setdefault(m["method"], []).append(result.students[name])
    return [record("teacher", [result.teacher])] + [record(k, v) for k, v in by_method.items()]
