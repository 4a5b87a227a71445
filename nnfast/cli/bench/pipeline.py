"""``python -m nnfast bench --pipeline``: the bench's rows timed as in a user's process, and
end-to-end scikit-learn workflows with nnfast's MLP against scikit-learn's.

The steady-state tables (``nnfast.bench``, ``nnfast.cli.bench.mlp``) time each fit after a settle
pause and an untimed warm-up of the same implementation. A user's process is not like that:
NumPy, SciPy and scikit-learn do BLAS and OpenMP work between fits, and the process's other
thread pools (NumPy's and SciPy's bundled OpenBLAS, scikit-learn's libgomp) keep spinning for
a while after it, holding cores that a fit's threads then wait for. The warm-up absorbs that,
so here every row is timed under conditions with no warm-up of the same implementation in
between:

- ``quiet``: after the settle pause and the untimed warm-up, as in the steady-state tables;
- ``after BLAS``: right after ``other_blas_work`` (about ``--blas-seconds`` of NumPy matrix
  products, one SciPy BLAS product and one OpenMP reduction of scikit-learn's, so every pool
  that ``threadpoolctl.threadpool_info()`` lists has just worked), nothing in between;
- ``after scikit-learn`` (MLP rows): right after an untimed scikit-learn fit of the same
  workload, as in a search that compares estimators or the issue-9 harness.

nnfast runs at its default thread count and at ``n_threads=1``; the peers (the NumPy original
or scikit-learn, PyTorch and JAX when importable) at their defaults. All of a row's runs are
interleaved, repeat by repeat, and the tables report medians. JAX's loop is compiled once per
row before the repeats (the compile time has its own column).

The end-to-end rows (``END_TO_END``) time whole scikit-learn workflows on digits with
scikit-learn's ``MLPClassifier`` and with nnfast's, interleaved, after one untimed round of
both (imports, joblib's worker processes), and report the scores each produced.
"""

import dataclasses
import time
import warnings

import numpy as np

from ..._kernels import kernels
from ..._kernels.blas_kernels import runs_avx512
from ..._validation import check_n_threads
from .. import bench
from . import jax as bench_jax
from . import mlp as bench_mlp
from .workloads import MLP_WORKLOADS, WORKLOADS

QUIET, AFTER_BLAS, AFTER_SKLEARN = "quiet", "after BLAS", "after scikit-learn"
NNFAST, NNFAST_1 = "nnfast", "nnfast 1 thread"
BLAS_SECONDS = 0.1


# --- other libraries' work -----------------------------------------------------------------

_operands = {}


def other_blas_work(seconds=BLAS_SECONDS):
    """What a user's process does between fits: NumPy matrix products (NumPy's OpenBLAS) for
    about ``seconds``, then one product through SciPy's BLAS (SciPy bundles its own OpenBLAS)
    and, when scikit-learn is installed, one of its OpenMP reductions (its bundled libgomp),
    so that every pool has just worked and is spinning when the timed fit starts."""
    if not _operands:
        random_state = np.random.RandomState(0)
        _operands["a"] = random_state.random_sample((256, 256))
        _operands["points"] = random_state.random_sample((2_000, 16))
        _operands["centres"] = random_state.random_sample((64, 16))
    a = _operands["a"]
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        a @ a
    from scipy.linalg import blas
    blas.dgemm(1.0, a, a)
    if bench_mlp.sklearn_available():
        from sklearn.metrics import pairwise_distances_argmin
        pairwise_distances_argmin(_operands["points"], _operands["centres"])


# --- per-fit rows -----------------------------------------------------------------------------

@dataclasses.dataclass
class _Runner:
    """One implementation at one thread count on one (workload, dtype)."""

    name: str
    fit: object            # () -> (seconds, weights) or None
    warm_up: object        # () -> None: the steady-state tables' untimed warm-up
    conditions: tuple


def _network_runners(workload, dtype, with_torch):
    fits = bench.implementations(with_torch=with_torch)
    short = bench.shortened(workload)

    def runner(name, impl, n_threads, conditions=(QUIET, AFTER_BLAS)):
        return _Runner(name, lambda: fits[impl](workload, dtype, n_threads),
                       lambda: fits[impl](short, dtype, n_threads), conditions)

    runners = [runner(NNFAST, "nnfast", None), runner(NNFAST_1, "nnfast", 1),
               runner("numpy", "numpy", None)]
    if "torch" in fits:
        runners.append(runner("torch", "torch", None))
    return runners


def _mlp_runners(workload, dtype, with_torch, with_jax):
    fits = bench_mlp.implementations(with_torch=with_torch, with_jax=with_jax)
    every = (QUIET, AFTER_BLAS, AFTER_SKLEARN)

    def runner(name, impl, n_threads, conditions=every):
        return _Runner(name, lambda: fits[impl](workload, dtype, n_threads, workload.max_iter),
                       lambda: fits[impl](workload, dtype, n_threads,
                                          bench_mlp.WARMUP_EPOCHS), conditions)

    runners = [runner(NNFAST, "nnfast", None), runner(NNFAST_1, "nnfast", 1),
               runner("sklearn", "sklearn", None, (QUIET, AFTER_BLAS))]
    if "torch" in fits and not (workload.solver == "lbfgs" or workload.sparse):
        runners.append(runner("torch", "torch", None))
    if "jax" in fits and bench_jax.supports(workload):
        runners.append(runner("jax", "jax", None))
    return runners


def _weight_difference(a, b):
    return max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max())
               for x, y in zip(a, b))


def run_row(kind, name, dtype, repeats=3, with_torch=True, with_jax=True,
            blas_seconds=BLAS_SECONDS, settle=bench.settle, progress=None):
    """Times one (workload, dtype) under every condition; returns its result row.

    ``kind`` is "network" (``WORKLOADS``) or "mlp" (``MLP_WORKLOADS``). The row holds the
    median seconds per fit of every runner and condition, each runner's largest final-weight
    difference from the reference implementation (the NumPy original / scikit-learn; None
    for PyTorch's MLP, which starts from other weights) and JAX's compile time.
    """
    dtype = np.dtype(dtype)
    if kind == "network":
        workload = WORKLOADS[name]
        runners, reference = _network_runners(workload, dtype, with_torch), "numpy"
    else:
        workload = MLP_WORKLOADS[name]
        runners, reference = _mlp_runners(workload, dtype, with_torch, with_jax), "sklearn"
    sklearn_fit = bench_mlp.implementations(with_torch=False, with_jax=False)["sklearn"] \
        if kind == "mlp" else None
    before = {
        QUIET: lambda runner: runner.warm_up(),
        AFTER_BLAS: lambda runner: other_blas_work(blas_seconds),
        AFTER_SKLEARN: lambda runner: sklearn_fit(workload, dtype, None, workload.max_iter),
    }
    compile_seconds = {}
    for runner in runners:
        if runner.name == "jax":
            # Compiles the loop for the timed runs' and the warm-up's shapes, once, before
            # any timed run (a compile would otherwise fall between a condition and a run).
            runner.fit()
            runner.warm_up()
            compile_seconds["jax"] = bench_jax.compile_seconds(workload, dtype,
                                                               workload.max_iter)
    times = {(r.name, c): [] for r in runners for c in r.conditions}
    final = {}
    for repeat in range(repeats):
        for condition in (QUIET, AFTER_BLAS, AFTER_SKLEARN):
            for runner in runners:
                if condition not in runner.conditions:
                    continue
                if progress is not None:
                    print(f"\r{name:<13} {dtype.name:<7} {runner.name:<15} {condition:<18} "
                          f"run {repeat + 1}/{repeats}   ", end="", file=progress, flush=True)
                settle()
                before[condition](runner)
                elapsed, weights = runner.fit()
                times[runner.name, condition].append(elapsed)
                final[runner.name] = weights
    if progress is not None:
        print("\r" + " " * 72 + "\r", end="", file=progress, flush=True)
    seconds = {}
    for (runner, condition), values in times.items():
        seconds.setdefault(runner, {})[condition] = float(np.median(values))
    comparable = [r.name for r in runners
                  if r.name != reference and not (kind == "mlp" and r.name == "torch")]
    return {
        "kind": kind, "workload": name, "dtype": dtype.name,
        "threads": check_n_threads(None), "reference": reference,
        "seconds": seconds,
        "max_weight_difference": {r: _weight_difference(final[r], final[reference])
                                  for r in comparable},
        "compile_seconds": compile_seconds,
    }


def run(network_names, mlp_names, dtypes, repeats=3, with_torch=True, with_jax=True,
        blas_seconds=BLAS_SECONDS, settle=bench.settle, progress=None):
    """Every (workload, dtype) row of both kinds, in order."""
    cases = ([("network", n, d) for n in network_names for d in dtypes]
             + [("mlp", n, d) for n in mlp_names for d in dtypes])
    return [run_row(kind, name, dtype, repeats, with_torch, with_jax, blas_seconds, settle,
                    progress) for kind, name, dtype in cases]


def _ms(seconds):
    return "-" if seconds is None else f"{1e3 * seconds:,.2f}"


def _ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def format_nnfast_table(rows):
    """nnfast's rows: default threads quiet and after other work, 1 thread, and the ratios
    (milliseconds per fit, medians)."""
    has_sklearn = any(r["kind"] == "mlp" for r in rows)
    header = ["workload", "dtype", "threads", "quiet ms", "after BLAS ms",
              "after BLAS / quiet", "1 thread: quiet ms", "1 thread: after BLAS ms",
              "default / 1 thread: quiet", "default / 1 thread: after BLAS"]
    if has_sklearn:
        header += ["after scikit-learn ms", "after scikit-learn / quiet",
                   "1 thread: after scikit-learn ms"]
    header.append("max |W - W_ref|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        d, s = r["seconds"][NNFAST], r["seconds"][NNFAST_1]
        cells = [r["workload"], r["dtype"], str(r["threads"]), _ms(d[QUIET]),
                 _ms(d[AFTER_BLAS]), _ratio(d[AFTER_BLAS], d[QUIET]), _ms(s[QUIET]),
                 _ms(s[AFTER_BLAS]), _ratio(d[QUIET], s[QUIET]),
                 _ratio(d[AFTER_BLAS], s[AFTER_BLAS])]
        if has_sklearn:
            cells += [_ms(d.get(AFTER_SKLEARN)), _ratio(d.get(AFTER_SKLEARN), d[QUIET]),
                      _ms(s.get(AFTER_SKLEARN))]
        cells.append(f"{r['max_weight_difference'][NNFAST]:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_PEER_NAMES = {"numpy": "NumPy original", "sklearn": "scikit-learn", "torch": "PyTorch",
               "jax": "JAX (jit loop)"}


def format_peer_table(rows):
    """Every peer's times under each condition and nnfast's (default threads) speedup over it
    under the same condition."""
    header = ["workload", "dtype", "peer", "quiet ms", "after BLAS ms", "after scikit-learn ms",
              "nnfast speedup: quiet", "after BLAS", "after scikit-learn", "compile s",
              "max |W - W_ref|"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ours = r["seconds"][NNFAST]
        for peer, times in r["seconds"].items():
            if peer in (NNFAST, NNFAST_1):
                continue
            compile_s = r["compile_seconds"].get(peer)
            difference = r["max_weight_difference"].get(peer)
            cells = [r["workload"], r["dtype"], _PEER_NAMES.get(peer, peer)]
            cells += [_ms(times.get(c)) for c in (QUIET, AFTER_BLAS, AFTER_SKLEARN)]
            cells += [_ratio(times.get(c), ours.get(c) if c in times else None)
                      for c in (QUIET, AFTER_BLAS, AFTER_SKLEARN)]
            cells += ["-" if compile_s is None else f"{compile_s:.2f}",
                      "reference" if peer == r["reference"]
                      else "-" if difference is None else f"{difference:.1e}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- end-to-end rows ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class EndToEnd:
    """A scikit-learn workflow on digits, run with either library's ``MLPClassifier``.

    ``rows`` caps digits' 1,797 rows (None: all; the tests shrink it), ``max_iter`` is the
    estimator's (None: its default, 200), ``n_jobs`` the search's, ``batches`` /
    ``batch_rows`` the partial_fit stream's.
    """

    name: str
    kind: str  # "cross_val_score", "grid_search" or "partial_fit"
    description: str
    rows: int = None
    max_iter: int = None
    cv: int = 5
    n_jobs: int = 1
    batches: int = 100
    batch_rows: int = 50
    #: GridSearchCV's candidates: 2 x 2 = 4.
    grid: tuple = (("mlpclassifier__alpha", (1e-4, 1e-2)),
                   ("mlpclassifier__hidden_layer_sizes", ((50,), (100,))))


END_TO_END = {
    e.name: e
    for e in (
        EndToEnd("cv-digits", "cross_val_score",
                 "cross_val_score(make_pipeline(StandardScaler(), MLPClassifier()), cv=5)"),
        EndToEnd("grid-digits-jobs1", "grid_search",
                 "GridSearchCV, 4 candidates x 3 folds, 60 epochs, n_jobs=1",
                 max_iter=60, cv=3, n_jobs=1),
        EndToEnd("grid-digits-jobs2", "grid_search",
                 "GridSearchCV, 4 candidates x 3 folds, 60 epochs, n_jobs=2",
                 max_iter=60, cv=3, n_jobs=2),
        EndToEnd("partial-fit-digits", "partial_fit",
                 "partial_fit stream of 100 batches of 50 rows (scaled digits)"),
    )
}


def _mlp_classes():
    from sklearn.neural_network import MLPClassifier as SklearnMLP

    from ...sklearn import MLPClassifier as NnfastMLP
    return {"sklearn": SklearnMLP, "nnfast": NnfastMLP}


def _digits(rows):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return X[:rows], y[:rows]


def run_end_to_end(case, implementation):
    """Runs one workflow with one library's MLPClassifier (its defaults, random_state=0, so
    that both libraries make the same fits); returns (seconds, scores), scores an array
    (cross-validation scores, the grid's mean test scores, or the stream's accuracy on all
    its rows after each tenth of the batches)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    MLP = _mlp_classes()[implementation]
    params = {"random_state": 0}
    if case.max_iter is not None:
        params["max_iter"] = case.max_iter
    X, y = _digits(case.rows)
    with warnings.catch_warnings():
        # Fits that stop at max_iter warn, in both libraries alike.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if case.kind == "cross_val_score":
            start = time.perf_counter()
            scores = cross_val_score(make_pipeline(StandardScaler(), MLP(**params)), X, y,
                                     cv=case.cv, n_jobs=case.n_jobs)
            return time.perf_counter() - start, np.asarray(scores)
        if case.kind == "grid_search":
            search = GridSearchCV(make_pipeline(StandardScaler(), MLP(**params)),
                                  {key: list(values) for key, values in case.grid},
                                  cv=case.cv, n_jobs=case.n_jobs)
            start = time.perf_counter()
            search.fit(X, y)
            return time.perf_counter() - start, np.asarray(search.cv_results_["mean_test_score"])
        if case.kind == "partial_fit":
            X = StandardScaler().fit_transform(X)
            classes = np.unique(y)
            order = np.random.RandomState(0).permutation(len(X))
            model = MLP(**params)
            checkpoints = max(1, case.batches // 10)
            scores = []
            elapsed = 0.0
            for batch in range(case.batches):
                rows = order[np.arange(batch * case.batch_rows,
                                       (batch + 1) * case.batch_rows) % len(X)]
                start = time.perf_counter()
                model.partial_fit(X[rows], y[rows], classes=classes)
                elapsed += time.perf_counter() - start
                if (batch + 1) % checkpoints == 0:
                    scores.append(model.score(X, y))  # untimed
            return elapsed, np.asarray(scores)
    raise ValueError(f"unknown end-to-end kind {case.kind!r}")


def run_end_to_end_rows(names, repeats=3, settle=bench.settle, progress=None):
    """Times every named workflow with both libraries, interleaved; returns result rows."""
    rows = []
    for name in names:
        case = END_TO_END[name]
        for implementation in ("sklearn", "nnfast"):  # untimed round: imports, workers
            run_end_to_end(case, implementation)
        times = {"sklearn": [], "nnfast": []}
        scores = {}
        for repeat in range(repeats):
            for implementation in times:
                if progress is not None:
                    print(f"\r{name:<19} {implementation:<8} run {repeat + 1}/{repeats}   ",
                          end="", file=progress, flush=True)
                settle()
                elapsed, scores[implementation] = run_end_to_end(case, implementation)
                times[implementation].append(elapsed)
        seconds = {impl: float(np.median(t)) for impl, t in times.items()}
        rows.append({
            "workload": name, "description": case.description, "seconds": seconds,
            "speedup": seconds["sklearn"] / seconds["nnfast"], "scores": scores,
            "max_score_difference": float(np.abs(scores["sklearn"] - scores["nnfast"]).max()),
        })
    if progress is not None:
        print("\r" + " " * 60 + "\r", end="", file=progress, flush=True)
    return rows


def format_end_to_end_table(rows):
    header = ["end to end", "what", "scikit-learn s", "nnfast s", "speedup",
              "mean score: scikit-learn", "nnfast", "max |score difference|"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        s = r["seconds"]
        cells = [r["workload"], r["description"], f"{s['sklearn']:,.4f}", f"{s['nnfast']:,.4f}",
                 f"{r['speedup']:.2f}x", f"{r['scores']['sklearn'].mean():.4f}",
                 f"{r['scores']['nnfast'].mean():.4f}", f"{r['max_score_difference']:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the header -----------------------------------------------------------------------------

def cpu_flags():
    """The SIMD extensions /proc/cpuinfo lists that nnfast's kernel builds use: "AVX2",
    "AVX-512F" ..., or "unknown"."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle
                          if line.startswith("flags")), None)
    except OSError:
        flags = None
    if flags is None:
        return "unknown"
    names = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512F", "avx512bw": "AVX-512BW",
             "avx512dq": "AVX-512DQ", "avx512vl": "AVX-512VL"}
    present = [label for flag, label in names.items() if flag in flags]
    return ", ".join(present) if present else "no AVX2 / AVX-512"


def blas_core_advice(pools, cpu_has_avx512):
    """A header line when an OpenBLAS in the process runs kernels without AVX-512 on a CPU
    that has it, else None. pools: threadpoolctl's threadpool_info(); cpu_has_avx512:
    whether the CPU runs nnfast's AVX-512 build.

    OpenBLAS picks its kernels from the CPU's family and model, and takes a model it does not
    know for the newest one it does: these machines' AMD EPYC (family 26, Zen 5) ran its
    Haswell (AVX2) kernels for NumPy's and scikit-learn's products and nnfast's layers wider
    than its own loops take (nnfast._kernels.blas_kernels). OPENBLAS_CORETYPE, read when
    OpenBLAS loads, overrides it."""
    if not cpu_has_avx512:
        return None
    slower = [f"{p['filepath'].rsplit('/', 1)[-1]} ({p.get('architecture')})" for p in pools
              if p.get("internal_api") == "openblas" and p.get("architecture")
              and not runs_avx512(p["architecture"])]
    if not slower:
        return None
    return ("BLAS kernels: OpenBLAS runs kernels without AVX-512 on this AVX-512 CPU in "
            + ", ".join(slower) + "; OPENBLAS_CORETYPE=SkylakeX set before Python starts "
            "lets it use AVX-512 (docs/user_guide/performance.rst)")


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def describe_environment(with_torch=True, with_jax=True):
    """Lines for the table header: CPU flags, the peers' versions, the process's thread
    pools (threadpoolctl) and each implementation's thread count."""
    versions = [f"{label} {v}" for label, module in
                (("scikit-learn", "sklearn"), ("threadpoolctl", "threadpoolctl"))
                + ((("PyTorch", "torch"),) if with_torch else ())
                + ((("JAX", "jax"), ("jaxlib", "jaxlib")) if with_jax else ())
                if (v := _version(module)) is not None]
    lines = [f"CPU flags: {cpu_flags()}", "Versions: " + (", ".join(versions) or "-")]
    try:
        from threadpoolctl import threadpool_info
        pools = threadpool_info()
        lines.append("Thread pools: " + "; ".join(
            " ".join(filter(None, (p["internal_api"], p.get("version"))))
            + f" ({p['num_threads']} threads, "
            + (f"{p['architecture']} kernels, " if p.get("architecture") else "")
            + f"{p['filepath'].rsplit('/', 1)[-1]})" for p in pools))
        advice = blas_core_advice(pools, kernels.cpu_runs(4))
        if advice:
            lines.append(advice)
    except ImportError:
        pass
    lines.append(f"Threads: nnfast default (n_threads=None, {check_n_threads(None)}) and "
                 "n_threads=1 where named; NumPy / scikit-learn / PyTorch at their defaults; "
                 "JAX at XLA's default")
    return lines
