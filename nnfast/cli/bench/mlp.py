"""The MLP rows of ``python -m nnfast bench``: ``nnfast.sklearn.MLPClassifier`` against
scikit-learn's ``MLPClassifier`` (and the same model and optimizer written in PyTorch, when it
is installed, and in JAX with the whole loop compiled, ``nnfast.cli.bench.jax``, when JAX is)
on ``nnfast.cli.bench.workloads.MLP_WORKLOADS``.

Every implementation fits the same data with the same hyperparameters for the same number of
epochs; nnfast and scikit-learn also start from the same weights and visit the rows in the
same order (the same ``random_state``), so the table also shows how far apart their final
weights are. Runs are interleaved and each follows a short untimed warm-up, as in
``nnfast.bench``; the table reports medians of whole fits.
"""

import time
import tracemalloc
import warnings

import numpy as np

from ..._validation import check_n_threads
from . import jax as bench_jax
from . import torch_mlp
from .workloads import MLP_WORKLOADS

WARMUP_EPOCHS = 2


def quietly(fit):
    """Runs fit() with ConvergenceWarning silenced: the workloads stop at max_iter on
    purpose."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit()


def _fit_estimator(Estimator, workload, dtype, max_iter, **extra):
    X, y = workload.data(dtype)
    model = Estimator(**workload.params(max_iter=max_iter), **extra)
    start = time.perf_counter()
    quietly(lambda: model.fit(X, y))
    return time.perf_counter() - start, model.coefs_


def _sklearn(workload, dtype, n_threads, max_iter):
    from sklearn.neural_network import MLPClassifier
    return _fit_estimator(MLPClassifier, workload, dtype, max_iter)


def _nnfast(workload, dtype, n_threads, max_iter):
    from ...sklearn import MLPClassifier
    return _fit_estimator(MLPClassifier, workload, dtype, max_iter, n_threads=n_threads)


def _torch(workload, dtype, n_threads, max_iter):
    """The same network, loss (cross-entropy plus scikit-learn's L2 term) and optimizer in
    PyTorch (``nnfast.cli.bench.torch_mlp``), trained in a plain mini-batch loop over shuffled
    rows. None for "lbfgs", whose PyTorch optimizer is a different algorithm."""
    if workload.solver == "lbfgs" or workload.sparse:
        return None
    X, y = workload.data(dtype)
    peer = torch_mlp.Peer.from_params(workload.params(max_iter=max_iter), classifier=True)
    return torch_mlp.fit(peer, X, y, max_iter, n_threads=check_n_threads(n_threads))


def peak_memory(function, workload, dtype, n_threads, max_iter):
    """Peak bytes that NumPy / SciPy / Python allocate during one fit beyond what existed
    before it (tracemalloc; the data are made before it starts), for the sparse workloads'
    memory column. Untimed: tracing slows allocation."""
    workload.data(dtype)  # any caching of the data happens before the trace
    tracemalloc.start()
    try:
        function(workload, dtype, n_threads, max_iter)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def sklearn_available():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def implementations(with_torch=True, with_jax=True):
    """{name: function(workload, dtype, n_threads, max_iter) -> (seconds, coefs) or None}:
    scikit-learn, nnfast and, if asked for and importable, PyTorch and JAX (None where a
    peer has no such model)."""
    functions = {"sklearn": _sklearn, "nnfast": _nnfast}
    if with_torch and _torch_available():
        functions["torch"] = _torch
    if with_jax and bench_jax.jax_available():
        functions["jax"] = bench_jax.fit
    return functions


def run(names, dtypes, repeats=3, n_threads=None, with_torch=True, settle=None,
        progress=None, with_jax=True):
    """Times every implementation on every (MLP workload, dtype); returns result rows.

    ``settle``: a function called before every run (``nnfast.bench`` passes its wait for
    idle worker threads).
    """
    functions = implementations(with_torch, with_jax)
    rows = []
    cases = [(name, dtype) for name in names for dtype in dtypes]
    for index, (name, dtype) in enumerate(cases, 1):
        workload = MLP_WORKLOADS[name]
        times = {impl: [] for impl in functions}
        final = {}
        for repeat in range(repeats):
            for impl, function in functions.items():
                if progress is not None:
                    print(f"\r[{index}/{len(cases)}] {name:<13} {dtype:<7} {impl:<7} run "
                          f"{repeat + 1}/{repeats}   ", end="", file=progress, flush=True)
                if settle is not None:
                    settle()
                function(workload, np.dtype(dtype), n_threads, WARMUP_EPOCHS)
                result = function(workload, np.dtype(dtype), n_threads, workload.max_iter)
                if result is None:
                    continue
                times[impl].append(result[0])
                final[impl] = result[1]
        seconds = {impl: float(np.median(t)) for impl, t in times.items() if t}
        peaks = None
        if workload.sparse:
            # Peak memory of one more fit of each, traced (the data made outside the trace).
            peaks = {}
            for impl in ("sklearn", "nnfast"):
                if settle is not None:
                    settle()
                peaks[impl] = peak_memory(functions[impl], workload, np.dtype(dtype),
                                          n_threads, workload.max_iter)
        rows.append({
            "peak_bytes": peaks,
            "workload": name,
            "dtype": dtype,
            "threads": check_n_threads(n_threads),
            "seconds_per_fit": seconds,
            "speedup": seconds["sklearn"] / seconds["nnfast"],
            "speedup_vs_torch": (seconds["torch"] / seconds["nnfast"] if "torch" in seconds
                                 else None),
            "speedup_vs_jax": (seconds["jax"] / seconds["nnfast"] if "jax" in seconds
                               else None),
            "jax_compile_seconds": bench_jax.compile_seconds(workload, np.dtype(dtype),
                                                             workload.max_iter),
            "max_weight_difference": max(float(np.abs(a - b).max())
                                         for a, b in zip(final["nnfast"], final["sklearn"])),
        })
    if progress is not None:
        print("\r" + " " * 64 + "\r", end="", file=progress, flush=True)
    return rows


def format_table(rows):
    """The MLP results as a Markdown table: median milliseconds per fit and ratios."""
    has_torch = any(r["speedup_vs_torch"] is not None for r in rows)
    header = ["MLP workload", "dtype", "threads", "scikit-learn ms/fit", "nnfast ms/fit",
              "speedup"]
    if has_torch:
        header += ["PyTorch ms/fit", "vs PyTorch"]
    has_jax = any(r.get("speedup_vs_jax") is not None for r in rows)
    if has_jax:
        header += ["JAX ms/fit", "vs JAX", "JAX compile s"]
    has_peaks = any(r.get("peak_bytes") for r in rows)
    if has_peaks:
        header += ["scikit-learn peak MiB", "nnfast peak MiB"]
    header.append("max |W_nnfast - W_sklearn|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        s = r["seconds_per_fit"]
        cells = [r["workload"], r["dtype"], str(r["threads"]), f"{1e3 * s['sklearn']:,.1f}",
                 f"{1e3 * s['nnfast']:,.2f}", f"{r['speedup']:,.1f}x"]
        if has_torch:
            cells += [f"{1e3 * s['torch']:,.1f}" if "torch" in s else "-",
                      f"{r['speedup_vs_torch']:,.1f}x" if r["speedup_vs_torch"] else "-"]
        if has_jax:
            compile_s = r.get("jax_compile_seconds")
            cells += [f"{1e3 * s['jax']:,.1f}" if "jax" in s else "-",
                      f"{r['speedup_vs_jax']:,.1f}x" if r.get("speedup_vs_jax") else "-",
                      f"{compile_s:.2f}" if "jax" in s and compile_s is not None else "-"]
        if has_peaks:
            peaks = r.get("peak_bytes") or {}
            cells += [f"{peaks[impl] / 2**20:,.0f}" if impl in peaks else "-"
                      for impl in ("sklearn", "nnfast")]
        cells.append(f"{r['max_weight_difference']:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
