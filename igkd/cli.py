"""`igkd …`: a thin command line over the package's functions.

Errors in the user's input (bad paths, wrong files, missing data) print one line and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from igkd.errors import IgkdError


def _evaluate(args: argparse.Namespace) -> None:
    from igkd import data, models, train

    model = models.load_student(args.checkpoint)
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
    bench = sub.add_parser("bench", help="throughput benchmarks (ratios against a reference)")
    bench.add_argument(
        "what",
        choices=["train", "ig"],
        help="train: igkd engine vs DataLoader+PIL; ig: igkd integrated gradients vs Captum",
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")
    bench.set_defaults(func=_bench)
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
