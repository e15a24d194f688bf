"""What the two benchmarks share: the machine tag printed beside every speed figure (CPU model,
torch threads, memory allocator), re-running a benchmark under other allocators, and a
per-operator profile of a few steps grouped into categories.

Not a module of the package: the benchmarks import it from their own folder.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile, schedule

# --- the machine -----------------------------------------------------------------------------------

ALLOCATORS = ("glibc", "glibc-nommap", "tcmalloc", "jemalloc")
# glibc serves large blocks with fresh mmap()s (always above 32 MiB; a batch-64 student activation
# in fp32 is 37.7 MB), unmaps them on free and trims its heap when much of it is free, so every
# step page-faults its memory back in. These make it keep what it got.
GLIBC_NOMMAP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(16 << 30)}
# Debian's packages: libtcmalloc-minimal4 (or libgoogle-perftools4), libjemalloc2.
ALLOCATOR_LIBS = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2",),
}
INSTALL_HINT = {"tcmalloc": "libtcmalloc-minimal4", "jemalloc": "libjemalloc2"}
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
ISA_FLAGS = (
    ("amx_bf16", "AMX"),
    ("avx512_bf16", "AVX512-BF16"),
    ("avx512f", "AVX512"),
    ("avx2", "AVX2"),
)
RESULT_ENV = "IGKD_BENCH_RESULT"  # where a re-run benchmark writes its figures (JSON)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), its widest vector/matrix extension and core count."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())  # the first CPU's lines
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or "unknown CPU"
    flags = set(info.get("flags", "").split())
    isa = [label for flag, label in ISA_FLAGS if flag in flags][:1]
    return f"{' '.join(name.split())} ({', '.join([*isa, f'{os.cpu_count()} cores'])})"


def allocator() -> str:
    """The malloc this process runs on: tcmalloc/jemalloc when mapped in (LD_PRELOAD), else glibc."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown malloc"
    for lib, name in (("libtcmalloc", "tcmalloc"), ("libjemalloc", "jemalloc")):
        if lib in maps:
            return name
    if os.environ.get("MALLOC_MMAP_MAX_") == "0":
        return "glibc, MALLOC_MMAP_MAX_=0"
    return "glibc malloc"


def tag() -> str:
    """'[CPU | N threads | allocator]', printed beside every speed figure."""
    n = torch.get_num_threads()
    return f"[{cpu_model()} | {n} thread{'s' if n != 1 else ''} | {allocator()}]"


def load_note() -> str:
    """'load average L on N cores', for the header: other jobs make every figure noisier."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return "load average unknown"
    return f"load average {load:.1f} on {os.cpu_count()} cores"


# --- re-running under other allocators -------------------------------------------------------------


def allocator_library(name: str) -> str | None:
    """The path of `name`'s shared library, or None when it is not installed."""
    for lib in ALLOCATOR_LIBS.get(name, ()):
        for d in LIB_DIRS:
            if (Path(d) / lib).is_file():
                return str(Path(d) / lib)
    return None


def parse_allocators(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in ALLOCATORS]
    if bad or not names:
        raise SystemExit(f"--allocators {text!r}: use a comma-separated list of {ALLOCATORS}")
    return names


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` less `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def rerun_under(script: str, argv: Sequence[str], names: Sequence[str]) -> list[dict]:
    """Run `script argv` once per allocator in a subprocess (LD_PRELOAD, or glibc's MALLOC_ env
    vars), its output shown as it comes; returns the figures each run passed to `report`. A
    missing library is said in one line, and glibc runs in its place unless listed already."""
    base = os.environ.get("LD_PRELOAD", "").split()
    base = [p for p in base if "libtcmalloc" not in p and "libjemalloc" not in p]
    results = []
    todo = list(dict.fromkeys(names))
    for name in todo:
        preload = list(base)
        env = {k: v for k, v in os.environ.items() if k not in GLIBC_NOMMAP}
        if name == "glibc-nommap":
            env.update(GLIBC_NOMMAP)
        elif name != "glibc":
            lib = allocator_library(name)
            if lib is None:
                print(
                    f"{name}: none of {', '.join(ALLOCATOR_LIBS[name])} found "
                    f"(apt-get install -y {INSTALL_HINT[name]}); carrying on with glibc"
                )
                if "glibc" not in todo:
                    todo.append("glibc")
                continue
            preload.insert(0, lib)
        env.pop("LD_PRELOAD", None)
        if preload:
            env["LD_PRELOAD"] = " ".join(preload)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            env[RESULT_ENV] = str(out)
            print(f"=== {name}: {sys.executable} {script} {' '.join(argv)}", flush=True)
            subprocess.run([sys.executable, script, *argv], env=env, check=True)
            results.append(json.loads(out.read_text()))
    return results


def report(figures: dict) -> None:
    """Hand this run's figures to the parent `rerun_under` (no-op when run directly)."""
    path = os.environ.get(RESULT_ENV)
    if path:
        Path(path).write_text(json.dumps({"allocator": allocator(), "tag": tag(), **figures}))


# --- the profile -----------------------------------------------------------------------------------

MODEL_RANGE = "bench.model_forward"  # wraps each forward of the profiled module
DATA_RANGE = "bench.data"  # wrap the input pipeline in this to count it as data
CATEGORIES = (
    "depthwise conv",
    "pointwise (1x1) conv",
    "other conv",
    "BatchNorm",
    "activation",
    "linear/matmul",
    "optimizer",
    "allocator/memory",
    "data",
    "autograd bookkeeping",
    "other",
    "outside any op (Python)",
)
MEMORY_OPS = {
    "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
    "aten::new_empty_strided", "aten::zeros", "aten::zeros_like", "aten::new_zeros", "aten::zero_",
    "aten::fill_", "aten::ones_like", "aten::copy_", "aten::clone", "aten::contiguous", "aten::to",
    "aten::_to_copy", "aten::resize_", "aten::_copy_from", "aten::_copy_from_and_resize",
}  # fmt: skip
ACTIVATION_OPS = ("hardtanh", "relu", "clamp", "threshold", "sigmoid", "silu", "gelu", "hardswish")
LINEAR_OPS = {"aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "aten::bmm"}
CONV_OPS = {
    "aten::conv2d", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution",
    "aten::_slow_conv2d_forward", "aten::thnn_conv2d", "aten::convolution_backward",
    "aten::_convolution_depthwise2d", "aten::mkldnn_convolution_backward",
}  # fmt: skip


def _conv_kind(e) -> str:
    # Weight (O, C_in/groups, kh, kw): depthwise when groups == C_in > 1, i.e. weight.shape[1] == 1.
    shapes = e.input_shapes or []
    w, x = (2, 1) if "backward" in e.name else (1, 0)
    if len(shapes) <= w or len(shapes[w]) != 4 or len(shapes[x]) != 4:
        return "other conv"
    _, per_group, kh, kw = shapes[w]
    if per_group == 1 and shapes[x][1] > 1:
        return "depthwise conv"
    return "pointwise (1x1) conv" if kh * kw == 1 else "other conv"


def _op_category(e) -> str:
    name = e.name
    if name in CONV_OPS:
        return _conv_kind(e)
    if "batch_norm" in name:
        return "BatchNorm"
    if any(a in name for a in ACTIVATION_OPS):
        return "activation"
    if name in LINEAR_OPS:
        return "linear/matmul"
    return "other"


def _category(e, outside: str | None) -> str:
    """The category of event `e`'s self time, from its own name and its ancestors'.

    Ancestors decide first (optimizer step, data range, backward node), then memory ops by their
    own name wherever they run, then the outermost aten op (a conv's autocast cast is memory, the
    rest of the conv is the conv's).
    """
    chain, a = [], e
    while a is not None:
        chain.append(a)
        a = a.cpu_parent
    names = [a.name for a in chain]
    if any(n.startswith("Optimizer.") for n in names):
        return "optimizer"
    if DATA_RANGE in names:
        return "data"
    if e.name.startswith("ProfilerStep") or e.name == MODEL_RANGE:
        return "outside any op (Python)"  # their self time: the step's time in no op at all
    in_model = MODEL_RANGE in names
    in_backward = any(n.startswith("autograd::engine::") for n in names)
    if outside is not None and not in_model and not in_backward:
        return outside  # IG: everything around the model's forward and backward is its data
    if not e.name.startswith("aten::"):
        return "autograd bookkeeping" if in_backward else "other"
    if any("AccumulateGrad" in n for n in names):
        return "autograd bookkeeping"
    if e.name in MEMORY_OPS:
        return "allocator/memory"
    i = max(i for i, a in enumerate(chain) if a.name.startswith("aten::"))
    outer = chain[i]  # the outermost aten op around e
    if in_backward and i + 1 < len(chain) and chain[i + 1].name.startswith("autograd::engine::"):
        return "autograd bookkeeping"  # summing gradients of a tensor used twice (InputBuffer)
    return _op_category(outer)


class StepProfile:
    """torch.profiler over `active` steps after `warm` (the last of them the profiler's warm-up).

    A step starts at each forward of `module` (a forward pre-hook calls `prof.step()`), so it is
    one whole cycle: forward, backward, optimiser, and the next batch's data. Run at least
    `steps_needed` forwards inside the `with`.

    `outside`: the category of ops outside the module's forward, its backward and the optimiser
    (IG: "data", the interpolants and the accumulation), or None to classify them by name.
    """

    def __init__(self, module: nn.Module, warm: int = 3, active: int = 5, outside=None):
        self.module, self.warm, self.active, self.outside = module, warm, active, outside
        self.steps_needed = warm + active + 1  # the last one's start ends the recording
        # record_shapes: a conv's weight shape is the only thing that tells depthwise from
        # pointwise in the backward ops as well as the forward ones (module hooks miss the backward).
        self.prof = profile(
            activities=[ProfilerActivity.CPU],
            record_shapes=True,
            schedule=schedule(wait=warm, warmup=1, active=active, repeat=1),
        )
        self._ranges: list = []
        self._faults: list[int] = []  # minor page faults at the first and after the last step

    def _pre(self, module, args) -> None:
        self.prof.step()
        if self.prof.step_num in (self.warm + 1, self.warm + 1 + self.active):  # 1st, after last
            self._faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        r = record_function(MODEL_RANGE)
        r.__enter__()
        self._ranges.append(r)

    def _post(self, module, args, output) -> None:
        if self._ranges:
            self._ranges.pop().__exit__(None, None, None)

    def __enter__(self) -> StepProfile:
        self.prof.__enter__()
        self._hooks = [
            self.module.register_forward_pre_hook(self._pre),
            self.module.register_forward_hook(self._post),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self.prof.__exit__(*exc)

    def categories(self) -> tuple[dict[str, float], float, int]:
        """({category: ms per step}, ms per profiled step, profiled steps)."""
        events = self.prof.events()
        steps = [e for e in events if e.cpu_parent is None and e.name.startswith("ProfilerStep")]
        if not steps:
            raise RuntimeError(f"no profiled step: run at least {self.steps_needed} forwards")
        wall = sum(s.cpu_time_total for s in steps) / 1e3 / len(steps)
        ms: dict[str, float] = defaultdict(float)
        for e in events:
            root = e
            while root.cpu_parent is not None:
                root = root.cpu_parent
            if root.name.startswith("ProfilerStep"):  # ops of other threads have no step
                ms[_category(e, self.outside)] += e.self_cpu_time_total / 1e3 / len(steps)
        return dict(ms), wall, len(steps)

    def table(self, what: str, unprofiled_ms: float | None = None, top: int = 6) -> str:
        """The category table, then the `top` aten ops by self time (key_averages)."""
        ms, wall, n = self.categories()
        head = f"profile of {what}: {n} steps after {self.warm} warm ones, {wall:.1f} ms/step"
        if unprofiled_ms is not None:
            head += f" ({unprofiled_ms:.1f} ms unprofiled)"
        lines = [f"{head} {tag()}", f"  {'category':<26} {'ms/step':>9} {'% of step':>9}"]
        for c in sorted(CATEGORIES, key=lambda c: -ms.get(c, 0.0)):
            if ms.get(c, 0.0) >= 0.05:
                lines.append(f"  {c:<26} {ms[c]:9.1f} {100 * ms[c] / wall:9.1f}")
        ops = sorted(
            (k for k in self.prof.key_averages() if k.key.startswith("aten::")),
            key=lambda k: -k.self_cpu_time_total,
        )[:top]
        if len(self._faults) == 2:
            faults = (self._faults[1] - self._faults[0]) / n
            mb = faults * resource.getpagesize() / 1e6
            lines.append(
                f"  minor page faults {faults:,.0f}/step ({mb:.1f} MB/step of fresh pages from the "
                "kernel: allocator cost, counted in the ops that first touch them; see --allocators)"
            )
        lines.append(
            "  top ops by self time, ms/step: "
            + ", ".join(f"{k.key[6:]} {k.self_cpu_time_total / 1e3 / n:.1f}" for k in ops)
        )
        return "\n".join(lines)


def add_arguments(parser, profiled: str) -> None:
    """The options both benchmarks share: --profile (of `profiled`) and --allocators."""
    import argparse

    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"profile {profiled} by operator category (default on)",
    )
    parser.add_argument(
        "--allocators",
        default=None,
        help=f"re-run once under each, comma-separated, of {','.join(ALLOCATORS)}",
    )
