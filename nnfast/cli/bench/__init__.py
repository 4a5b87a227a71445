"""``python -m nnfast bench``: nnfast against the NumPy original (and PyTorch) on the workloads.

Every implementation trains the same network from the same initial weights for the workload's
full iteration count. Runs are interleaved (NumPy, nnfast, PyTorch, NumPy, ...) so that noise on
a shared machine falls on all of them alike, and the table reports medians.

Each timed run follows a short untimed warm-up of the same implementation (a few iterations of
the same workload), so that the table measures steady-state training rather than the first
touch of code and data: on the shared VMs this was measured on, a Python call made after a
0.3 s pause cost 8-11 us instead of 0.1 us, and a whole ``fit`` call 300-500 us instead of
~40 us, whichever library made it. That cold start is a constant per call, not per
iteration, and the README's Performance section states it beside the table.
"""

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

from ... import reference
from ..._kernels import kernels
from ..._validation import check_n_threads
from ...network import Network
from . import mlp as bench_mlp
from . import torch_mlp
from .workloads import MLP_WORKLOADS, WORKLOADS

DTYPES = ("float64", "float32")
_SETTLE_SECONDS = 0.3
_WARMUP_ITERATIONS = 5


def _numpy_original(workload, dtype, n_threads):
    """The original NumPy loop (nnfast.reference without error tracking)."""
    X, y = workload.data(dtype)
    weights, _ = reference.init_params(workload.sizes, 1, dtype)
    start = time.perf_counter()
    reference.fit(weights, None, X, y, workload.iterations, workload.learning_rate,
                  track_errors=False)
    return time.perf_counter() - start, weights


def _nnfast(workload, dtype, n_threads):
    X, y = workload.data(dtype)
    net = Network(workload.sizes, seed=1, dtype=dtype, n_threads=n_threads)
    start = time.perf_counter()
    net.fit(X, y, workload.iterations, workload.learning_rate)
    return time.perf_counter() - start, net.weights


def _torch(workload, dtype, n_threads):
    """The same algorithm on PyTorch CPU tensors, without autograd."""
    import torch

    torch.set_num_threads(check_n_threads(n_threads))
    X, y = (torch.from_numpy(a) for a in workload.data(dtype))
    weights = [torch.from_numpy(w) for w in reference.init_params(workload.sizes, 1, dtype)[0]]
    learning_rate = workload.learning_rate
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(workload.iterations):
            layers = [X]
            for w in weights:
                layers.append(torch.sigmoid(layers[-1] @ w))
            out = layers[-1]
            delta = (y - out) * (out * (1 - out))
            for k in range(len(weights) - 1, -1, -1):
                delta_next = delta
                if k > 0:
                    delta = (delta_next @ weights[k].T) * (layers[k] * (1 - layers[k]))
                weights[k].add_(layers[k].T @ delta_next, alpha=learning_rate)
    return time.perf_counter() - start, [w.numpy() for w in weights]


def settle():
    """Waits for the previous implementation's BLAS and OpenMP workers, which spin for a
    while after their last task, to go idle, so that they do not take the cores from the next
    timing. It waits busy rather than asleep: an idle CPU clocks down, and a short fit timed
    right after would pay for the ramp back up."""
    deadline = time.perf_counter() + _SETTLE_SECONDS
    while time.perf_counter() < deadline:
        pass


def shortened(workload):
    """The workload cut to a few iterations: a warm-up that runs the same code on the same
    data as the timed run."""
    return dataclasses.replace(workload, iterations=min(workload.iterations, _WARMUP_ITERATIONS))


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}
    return max(counts) if counts else None


def implementations(with_torch=True):
    """{name: function(workload, dtype, n_threads) -> (seconds, final weights)}: the NumPy
    original, nnfast and, if asked for and importable, PyTorch."""
    functions = {"numpy": _numpy_original, "nnfast": _nnfast}
    if with_torch and _torch_available():
        functions["torch"] = _torch
    return functions


def run(workloads, dtypes, repeats=3, n_threads=None, with_torch=True, progress=sys.stderr):
    """Times every implementation on every (workload, dtype); returns a list of result rows."""
    # nnfast gets None (its default: every core) unless a count was asked for, so that the
    # benchmark times what a user gets; PyTorch needs the number.
    threads_used = check_n_threads(n_threads)
    functions = implementations(with_torch)
    rows = []
    cases = [(w, d) for w in workloads for d in dtypes]
    for index, (name, dtype) in enumerate(cases, 1):
        workload = WORKLOADS[name]
        times = {impl: [] for impl in functions}
        final = {}
        for repeat in range(repeats):
            for impl, function in functions.items():
                if progress is not None:
                    print(f"\r[{index}/{len(cases)}] {name:<9} {dtype:<7} {impl:<6} run "
                          f"{repeat + 1}/{repeats}   ", end="", file=progress, flush=True)
                settle()
                function(shortened(workload), np.dtype(dtype), n_threads)
                elapsed, weights = function(workload, np.dtype(dtype), n_threads)
                times[impl].append(elapsed)
                final[impl] = weights
        per_iteration = {impl: 1e6 * float(np.median(t)) / workload.iterations
                         for impl, t in times.items()}
        rows.append({
            "workload": name,
            "dtype": dtype,
            "threads": threads_used,
            "us_per_iteration": per_iteration,
            "speedup": per_iteration["numpy"] / per_iteration["nnfast"],
            "speedup_vs_torch": (per_iteration["torch"] / per_iteration["nnfast"]
                                 if "torch" in per_iteration else None),
            "max_weight_difference": max(float(np.abs(a - b).max())
                                         for a, b in zip(final["nnfast"], final["numpy"])),
        })
    if progress is not None:
        print("\r" + " " * 60 + "\r", end="", file=progress, flush=True)
    return rows


def format_table(rows):
    """The results as a Markdown table: median microseconds per iteration and ratios."""
    has_torch = any(r["speedup_vs_torch"] is not None for r in rows)
    header = ["workload", "dtype", "threads", "NumPy us/it", "nnfast us/it", "speedup"]
    if has_torch:
        header += ["PyTorch us/it", "vs PyTorch"]
    header.append("max |W_nnfast - W_numpy|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        t = r["us_per_iteration"]
        cells = [r["workload"], r["dtype"], str(r["threads"]), f"{t['numpy']:,.2f}",
                 f"{t['nnfast']:,.3f}", f"{r['speedup']:,.1f}x"]
        if has_torch:
            cells += [f"{t['torch']:,.2f}" if "torch" in t else "-",
                      f"{r['speedup_vs_torch']:,.1f}x" if r["speedup_vs_torch"] else "-"]
        cells.append(f"{r['max_weight_difference']:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_machine():
    """One line naming the CPU, cores, kernel build and library versions."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import scipy

    from ... import __version__
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    blas = _blas_threads()
    openmp = "on" if kernels.OPENMP else "off"
    return (f"nnfast {__version__} ({kernels.ISA} kernel, OpenMP {openmp}), "
            f"NumPy {np.__version__}, SciPy {scipy.__version__}, Python "
            f"{sys.version.split()[0]}; {cpu}, {cores} cores"
            + (f", BLAS threads {blas}" if blas else ""))


def plot(rows, path):
    """Writes a bar chart of the speedup per workload (log scale) to path."""
    try:
        import matplotlib
    except ImportError as exc:
        raise SystemExit("--plot needs matplotlib: pip install 'nnfast[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    width = 0.8 / len(dtypes)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for k, dtype in enumerate(dtypes):
        speedups = [next((r["speedup"] for r in rows
                          if r["workload"] == w and r["dtype"] == dtype), 0) for w in workloads]
        positions = [i + (k - (len(dtypes) - 1) / 2) * width for i in range(len(workloads))]
        bars = axes.bar(positions, speedups, width, label=dtype)
        axes.bar_label(bars, labels=[f"{s:.1f}x" for s in speedups], fontsize=8)
    axes.set_xticks(range(len(workloads)), workloads)
    axes.set_yscale("log")
    axes.axhline(1, color="grey", linewidth=0.8)
    axes.set_ylabel("speedup over the NumPy original (median)")
    axes.set_title("nnfast vs NumPy, per workload")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    from . import options as bench_options
    from . import pipeline as bench_pipeline

    parser = argparse.ArgumentParser(
        prog="python -m nnfast bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("--pipeline: " + bench_pipeline.__doc__.split("\n\n", 1)[1]
                + "\n--options: " + bench_options.__doc__.split("\n\n", 1)[1]))
    parser.add_argument("--workload", action="append",
                        choices=(list(WORKLOADS) + list(MLP_WORKLOADS)
                                 + list(bench_pipeline.END_TO_END)),
                        help="workload to run (repeatable; default: all of the Network and "
                             "MLP ones, and with --pipeline the end-to-end ones too); the MLP "
                             f"ones ({', '.join(MLP_WORKLOADS)}) time "
                             "nnfast.sklearn.MLPClassifier against scikit-learn's, the "
                             f"end-to-end ones ({', '.join(bench_pipeline.END_TO_END)}) whole "
                             "scikit-learn workflows with either library's MLPClassifier")
    parser.add_argument("--dtype", action="append", choices=DTYPES,
                        help="dtype to run (repeatable; default: both)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per implementation")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for nnfast and PyTorch (default: all cores)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-jax", action="store_true",
                        help="skip the JAX peer of the MLP rows even if JAX is installed")
    parser.add_argument("--pipeline", action="store_true",
                        help="time every row as in a user's process: quiet, right after other "
                             "BLAS work and (MLP rows) right after a scikit-learn fit, at "
                             "nnfast's default thread count and at n_threads=1, with no "
                             "warm-up in between; then the end-to-end workflows")
    parser.add_argument("--blas-seconds", type=float, default=None,
                        help="with --pipeline: seconds of NumPy matrix products before each "
                             f"'after BLAS' run (default {bench_pipeline.BLAS_SECONDS})")
    parser.add_argument("--options", action="store_true",
                        help="time nnfast's options beyond scikit-learn's MLP (the new "
                             "activations, dropout, the cosine schedule with clipping, the "
                             "Huber loss), each beside the fit without it and beside the same "
                             "model in PyTorch, on the MLP workloads "
                             f"{', '.join(bench_options.OPTIONS_WORKLOADS)}")
    parser.add_argument("--option", action="append", choices=list(bench_options.CASES),
                        help="with --options: the option case to run (repeatable; default: "
                             "all)")
    parser.add_argument("--plot", metavar="FILE.png", help="write a chart of the speedups")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.pipeline and args.threads is not None:
        parser.error("--threads does not apply to --pipeline, whose rows run at nnfast's "
                     "default thread count and at n_threads=1")
    if args.pipeline and args.plot:
        parser.error("--plot charts the steady-state table; it does not apply to --pipeline")
    if args.blas_seconds is not None and not args.pipeline:
        parser.error("--blas-seconds applies only to --pipeline")
    if args.blas_seconds is not None and not 0 < args.blas_seconds <= 10:
        parser.error("--blas-seconds must be above 0 and at most 10")
    if args.option and not args.options:
        parser.error("--option applies only to --options")
    if args.options:
        if args.pipeline:
            parser.error("--options and --pipeline are separate modes: run them one at a time")
        if args.plot:
            parser.error("--plot charts the steady-state table; it does not apply to --options")
        others = [name for name in args.workload or ()
                  if name not in bench_options.OPTIONS_WORKLOADS]
        if others:
            parser.error(f"--options runs on {', '.join(bench_options.OPTIONS_WORKLOADS)}, "
                         f"not on {', '.join(others)}")

    print(describe_machine())
    with_torch, with_jax = not args.no_torch, not args.no_jax
    for line in bench_pipeline.describe_environment(with_torch, with_jax and not args.options):
        print(line)
    if args.options:
        return _main_options(args, bench_options)
    chosen = args.workload or (list(WORKLOADS) + list(MLP_WORKLOADS)
                               + (list(bench_pipeline.END_TO_END) if args.pipeline else []))
    network_workloads = [name for name in chosen if name in WORKLOADS]
    mlp_workloads = [name for name in chosen if name in MLP_WORKLOADS]
    end_to_end = [name for name in chosen if name in bench_pipeline.END_TO_END]
    dtypes = args.dtype or list(DTYPES)
    print(f"dtypes: {', '.join(dtypes)}; runs interleaved, {args.repeats} of each, medians")
    if (mlp_workloads or end_to_end) and not bench_mlp.sklearn_available():
        print("MLP and end-to-end workloads skipped: they need scikit-learn (pip install "
              "'nnfast[sklearn]')")
        mlp_workloads = end_to_end = []
    if args.pipeline:
        rows = bench_pipeline.run(
            network_workloads, mlp_workloads, dtypes, args.repeats, with_torch=with_torch,
            with_jax=with_jax, blas_seconds=args.blas_seconds or bench_pipeline.BLAS_SECONDS,
            settle=settle, progress=sys.stderr)
        for kind, title in (("network", "Network"), ("mlp", "MLPClassifier")):
            kind_rows = [r for r in rows if r["kind"] == kind]
            if kind_rows:
                print(f"\nnnfast {title}, ms per fit: quiet, after other work, 1 thread")
                print(bench_pipeline.format_nnfast_table(kind_rows))
                print(f"\nPeers of the {title} rows in the same runs")
                print(bench_pipeline.format_peer_table(kind_rows))
    else:
        if network_workloads:
            rows = run(network_workloads, dtypes, args.repeats, args.threads,
                       with_torch=with_torch)
            print(format_table(rows))
            if args.plot:
                plot(rows, args.plot)
                print(f"chart written to {args.plot}")
        if mlp_workloads:
            mlp_rows = bench_mlp.run(mlp_workloads, dtypes, args.repeats, args.threads,
                                     with_torch=with_torch, settle=settle,
                                     progress=sys.stderr, with_jax=with_jax)
            print(bench_mlp.format_table(mlp_rows))
    if end_to_end:
        end_rows = bench_pipeline.run_end_to_end_rows(end_to_end, args.repeats, settle=settle,
                                                      progress=sys.stderr)
        print("\nEnd to end, seconds per workflow (float64)")
        print(bench_pipeline.format_end_to_end_table(end_rows))
    return 0


def _main_options(args, bench_options):
    """``--options``: the option rows (nnfast.cli.bench.options) and their table."""
    names = args.workload or list(bench_options.OPTIONS_WORKLOADS)
    dtypes = args.dtype or list(DTYPES)
    print(f"dtypes: {', '.join(dtypes)}; runs interleaved, {args.repeats} of each, medians")
    if not bench_mlp.sklearn_available():
        print("--options skipped: its estimators need scikit-learn (pip install "
              "'nnfast[sklearn]')")
        return 0
    with_torch = not args.no_torch
    if with_torch and not torch_mlp.available():
        print("PyTorch is not installed: the table has nnfast's side only (pip install "
              "torch for the PyTorch columns)")
        with_torch = False
    elif not with_torch:
        print("PyTorch left out (--no-torch): the table has nnfast's side only")
    rows = bench_options.run(names, dtypes, args.option, args.repeats, args.threads,
                             with_torch=with_torch, settle=settle, progress=sys.stderr)
    print("\nnnfast's options beyond scikit-learn, ms per fit: each beside the fit without it"
          + (" and beside PyTorch" if with_torch else ""))
    print(bench_options.format_table(rows))
    return 0
