"""`igkd …`: a thin command line over the package's functions.

Errors in the user's input (bad paths, wrong files, missing data) print one line and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from igkd.errors import IgkdError


def _evaluate(args: argparse.Namespace) -> None:
    from igkd import checkpoints, data, train

    model = checkpoints.load_student(args.checkpoint)
    test = data.load_cifar10("test", args.data, download=False)
    result = train.evaluate(model, test, normalized=args.normalized)
    if args.json:
        print(
            json.dumps(
                {"checkpoint": str(args.checkpoint), "data": test.source, **result.as_dict()}
            )
        )
        return
    print(f"{args.checkpoint}: {result.accuracy:.2f} % top-1 on {result.n} images of {test.source}")
    for name, acc in result.per_class.items():
        print(f"  {name:<12} {acc:6.2f} %")


def _bench(args: argparse.Namespace) -> None:
    import runpy

    from igkd.paths import REPO_ROOT

    script = REPO_ROOT / "benchmarks" / f"{args.what}_throughput.py"
    if not script.is_file():
        raise IgkdError(f"{script} not found: benchmarks run from a checkout of the repository")
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")


def _export(args: argparse.Namespace) -> None:
    from pathlib import Path

    from igkd import checkpoints, data, onnx_export
    from igkd.errors import ConfigError

    if args.calibration_images < 1:
        raise ConfigError(f"--calibration-images {args.calibration_images}; use a positive count")
    if args.run is not None:
        model = checkpoints.load_model(args.run)
        run_dir = Path(args.run).expanduser().resolve()
        name = f"{run_dir.parent.name}-{run_dir.name}"
    else:
        model = checkpoints.load_model(args.checkpoint)
        name = Path(args.checkpoint).stem
    calibration = None
    if args.int8:  # load the data first: a missing dataset should stop before the slow export
        train = data.load_cifar10("train", args.data, download=False)
        n = min(args.calibration_images, len(train))
        calibration = train.images[data.stratified_subset(train.labels, n, seed=0)]
    out = Path(args.out).expanduser()
    fp32 = onnx_export.export_onnx(
        model, out / f"{name}.onnx", description=str(args.run or args.checkpoint)
    )
    diff = onnx_export.max_logit_difference(model, fp32)
    print(
        f"{fp32}: {fp32.stat().st_size / 2**20:.2f} MiB, fp32; max |logit diff| vs PyTorch {diff:.1e}"
    )
    if calibration is not None:
        int8 = onnx_export.quantize_int8(fp32, out / f"{name}.int8.onnx", calibration)
        print(
            f"{int8}: {int8.stat().st_size / 2**20:.2f} MiB, int8 (QDQ, per channel), calibrated on "
            f"{len(calibration)} training images of {train.source}"
        )
    print(f"input: {onnx_export.INPUT_SPACE}; output: (N, 10) logits")


def _runs_export(args: argparse.Namespace) -> None:
    from collections import Counter
    from pathlib import Path

    from igkd import archive

    out, book = Path(args.out).expanduser(), args.book
    if book is True:  # --book without a folder
        from igkd.book import BOOK_DIR

        book = BOOK_DIR / "executed"
    manifest = archive.export_runs(
        out,
        profile=args.profile,
        kinds=args.kinds,
        models=not args.metrics_only,
        ig=args.ig,
        runs_dir=args.runs,
        note=args.note,
        book=book,
        lean=args.lean,
    )
    counts = Counter(r["kind"] for r in manifest["runs"])
    kinds = ", ".join(f"{k} {n}" for k, n in counts.items())
    n = out.stat().st_size
    size = f"{n / 2**20:.1f} MiB" if n >= 2**20 / 10 else f"{n / 2**10:.1f} KiB"
    chapters = sum(name.endswith(".ipynb") for name in manifest.get("book", {}))
    with_book = f" and the executed book ({chapters} notebooks)" if "book" in manifest else ""
    halved = sum(r.get("model_dtype") == "float16" for r in manifest["runs"])
    lean = f"; lean: {halved} models as float16, the rest metrics only" if args.lean else ""
    print(f"exported {len(manifest['runs'])} runs ({kinds}){with_book} to {out}, {size}{lean}")


def _runs_import(args: argparse.Namespace) -> None:
    from igkd import archive

    r = archive.import_runs(args.archive, runs_dir=args.runs)
    left = f", {len(r.unfinished_existing)} left alone (unfinished here)"
    print(
        f"imported {len(r.imported)} runs, {len(r.skipped_existing)} already present"
        f"{left if r.unfinished_existing else ''}, into {r.runs_dir}"
    )


def _runs_list(args: argparse.Namespace) -> None:
    from igkd import archive, paths

    rows = archive.list_runs(args.runs)
    for r in rows:
        what = " ".join(
            str(x) for x in (r["method"], r["compression"] and f"{r['compression']}x") if x
        )
        acc = r["final_test_accuracy"]
        acc = f"{acc:.2f} %" if isinstance(acc, (int, float)) else "-"
        line = f"{r['kind']:<8} {r['hash']} {r['profile'] or '-':<6} {what or '-':<14} {acc:>8}"
        print(f"{line} {r['revision'] or '-':<7} {r['imported_from'] or ''}".rstrip())
    if not rows:
        print(f"no finished runs in {args.runs or paths.runs_dir()}")


def _runs_migrate(args: argparse.Namespace) -> None:
    """Tag the student runs made before runs recorded their purpose (`report.tag_untagged`)."""
    from igkd import paths, report

    root = Path(args.runs).expanduser().resolve() if args.runs else paths.runs_dir()
    with paths.runs_dir_override(root):
        for name in [args.profile] if args.profile else ["ci", "quick", "paper"]:
            try:
                done = report.tag_untagged(name)
            except IgkdError as e:  # e.g. no CIFAR-10 here for that profile's fingerprint
                print(f"{name}: skipped ({e})")
                continue
            what = ", ".join(f"{k} {v}" for k, v in done.items()) or "nothing to tag"
            print(f"{name}: tagged {what}")


def _add_runs(sub: argparse._SubParsersAction) -> None:
    runs = sub.add_parser("runs", help="export, import or list the finished runs of the run cache")
    rsub = runs.add_subparsers(dest="runs_command", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--runs", default=None, help="the run cache (default: $IGKD_RUNS)")
    ex = rsub.add_parser(
        "export", parents=[where], help="write finished runs to a .tar.gz with a manifest"
    )
    ex.add_argument("out", help="archive to write (.tar.gz)")
    ex.add_argument("--profile", choices=["ci", "quick", "paper"], help="only runs of this profile")
    ex.add_argument(
        "--kind", action="append", dest="kinds", help="only runs of this kind (repeatable)"
    )
    ex.add_argument(
        "--metrics-only",
        action="store_true",
        help="config, metadata, metrics and history only: no models",
    )
    ig = ex.add_mutually_exclusive_group()
    ig.add_argument("--ig", action="store_true", help="include the IG-map stores (large)")
    ig.add_argument("--no-ig", action="store_false", dest="ig", help="leave them out (default)")
    ex.add_argument("--note", default=None, help="free text stored in the manifest")
    ex.add_argument(
        "--book",
        nargs="?",
        const=True,
        metavar="DIR",
        help="also carry the executed book: DIR's notebooks and _build_info.json, and the "
        "summary.md beside DIR (default DIR: book/executed); refused if a notebook failed",
    )
    ex.add_argument(
        "--lean",
        action="store_true",
        help="models (as float16) only of the teachers and, with --book, of the runs the book's "
        "chapters read back; the other runs metrics-only. With --book it rebuilds the book "
        "without training; without, a cut-short study travels with its teacher",
    )
    ex.set_defaults(func=_runs_export, ig=False)
    im = rsub.add_parser(
        "import", parents=[where], help="verify an archive, then add the runs missing here"
    )
    im.add_argument("archive", help="archive written by `igkd runs export`")
    im.set_defaults(func=_runs_import)
    ls = rsub.add_parser("list", parents=[where], help="one line per finished run")
    ls.set_defaults(func=_runs_list)
    mi = rsub.add_parser(
        "migrate",
        parents=[where],
        help="tag the student runs made before runs recorded their purpose, by the old rules",
    )
    mi.add_argument("--profile", choices=["ci", "quick", "paper"], help="only this profile")
    mi.set_defaults(func=_runs_migrate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="igkd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="CIFAR-10 test accuracy of a student checkpoint")
    ev.add_argument("--checkpoint", required=True, help="state_dict file (.pt) of a student")
    ev.add_argument("--data", default=None, help="directory holding CIFAR-10 (default: $IGKD_DATA)")
    ev.add_argument(
        "--normalized",
        action="store_true",
        help="feed CIFAR-normalised inputs (default: [0, 1] pixels, as the paper's students)",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_evaluate)
    ex = sub.add_parser("export", help="write a teacher or student as ONNX (fp32, optionally int8)")
    source = ex.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="finished teacher or student run directory")
    source.add_argument(
        "--checkpoint", help="state_dict file (.pt) of the teacher or a student, or KD_IG etc."
    )
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="file format (onnx)")
    ex.add_argument(
        "--int8", action="store_true", help="also write a statically quantised int8 model"
    )
    ex.add_argument(
        "--calibration-images",
        type=int,
        default=512,
        help="CIFAR-10 training images the int8 calibration runs on (default 512)",
    )
    ex.add_argument("--data", default=None, help="directory holding CIFAR-10 (default: $IGKD_DATA)")
    ex.add_argument("--out", default=".", help="directory for the files (default: current)")
    ex.set_defaults(func=_export)
    bench = sub.add_parser("bench", help="throughput benchmarks (ratios against a reference)")
    bench.add_argument(
        "what",
        choices=["train", "ig"],
        help="train: igkd engine vs DataLoader+PIL; ig: igkd integrated gradients vs Captum",
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")
    bench.set_defaults(func=_bench)
    _add_runs(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except IgkdError as e:
        print(f"igkd: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
