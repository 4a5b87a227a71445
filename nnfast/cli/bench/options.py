"""``python -m nnfast bench --options``: what nnfast's options beyond scikit-learn's MLP cost.

Each row fits nnfast's ``MLPClassifier`` (``MLPRegressor`` for the Huber loss) with one option
on an MLP workload (``OPTIONS_WORKLOADS``), beside the fit without it (the same estimator at
scikit-learn's defaults: ReLU units, no dropout, a constant rate without clipping, the
squared error) and beside the same model written in PyTorch (``nnfast.cli.bench.torch_mlp``:
the same layers, loss with scikit-learn's L2 term, optimizer, batch size and epochs). So each
row shows what the option costs nnfast ("option / without") and how nnfast compares with
PyTorch on it ("vs PyTorch"), with the targets set for them in issue 18 where there are
some. The last columns are both libraries' training loss of the last epoch: they started from
different weights, so they agree only roughly, which shows that both fitted the same kind of
model.

The option cases (``CASES``, ``--option NAME``):

- ``leaky_relu``, ``elu``, ``gelu``, ``silu``, ``softplus``: the hidden activation, beside
  ReLU;
- ``dropout``: ``dropout=0.2`` (``torch.nn.Dropout(0.2)`` after each hidden activation),
  beside no dropout;
- ``cosine-clip``: ``learning_rate="cosine"`` and ``max_grad_norm=1.0`` (PyTorch's
  ``CosineAnnealingLR(T_max=epochs)`` stepped per epoch and ``clip_grad_norm_(1.0)``), beside
  the constant rate without clipping;
- ``huber``: ``MLPRegressor(loss="huber")`` (``torch.nn.HuberLoss(delta=1.0)``) on the
  workload's regression targets (``MLPWorkload.regression_data``), beside the squared error.

Every fit of a (workload, dtype) runs once per repeat, interleaved, each after a settle pause
and an untimed warm-up of the same fit (2 epochs); the table reports medians of whole fits.
nnfast runs at its default thread count (or ``--threads``), PyTorch at its own default (or
``--threads``).
"""

import dataclasses
import time

import numpy as np

from ..._validation import check_n_threads
from . import mlp as bench_mlp
from . import torch_mlp
from .workloads import MLP_WORKLOADS

#: The MLP workloads the option rows run on (``--workload`` picks among them).
OPTIONS_WORKLOADS = ("digits-adam", "20000x40-adam")
#: "option / without" at most this in issue 18's targets; "vs PyTorch" at least this.
RATIO_TARGET, TORCH_TARGET = 1.3, 5.0


@dataclasses.dataclass(frozen=True)
class Case:
    """One option: the estimator parameters it adds and the fit it is set beside."""

    name: str
    params: tuple  # (name, value) pairs added to the workload's estimator parameters
    without: str  # what the fit beside it is called in the table
    regression: bool = False
    ratio_target: float = None
    torch_target: float = None

    @property
    def estimator_params(self):
        return dict(self.params)


_ACTIVATION_CASES = tuple(
    Case(name, (("activation", name),), "relu", ratio_target=RATIO_TARGET,
         torch_target=TORCH_TARGET)
    for name in ("leaky_relu", "elu", "gelu", "silu", "softplus"))

CASES = {c.name: c for c in _ACTIVATION_CASES + (
    Case("dropout", (("dropout", 0.2),), "no dropout", ratio_target=RATIO_TARGET),
    Case("cosine-clip", (("learning_rate", "cosine"), ("max_grad_norm", 1.0)),
         "constant, no clipping"),
    Case("huber", (("loss", "huber"),), "squared_error", regression=True),
)}

#: The fit each case is beside: scikit-learn's defaults, a classifier or a regressor.
_WITHOUT = {False: (), True: (("loss", "squared_error"),)}

_LABELS = {"dropout": "dropout 0.2", "cosine-clip": "cosine + clip 1.0"}


def label(case):
    """The case as the table names it."""
    return _LABELS.get(case.name, case.name)


def fit_nnfast(workload, dtype, params, regression, n_threads, max_iter):
    """nnfast's estimator with params on the workload: (seconds, last epoch's loss)."""
    from ...sklearn import MLPClassifier, MLPRegressor

    X, y = workload.regression_data(dtype) if regression else workload.data(dtype)
    Estimator = MLPRegressor if regression else MLPClassifier
    model = Estimator(**workload.params(max_iter=max_iter), **params, n_threads=n_threads)
    start = time.perf_counter()
    bench_mlp.quietly(lambda: model.fit(X, y))
    return time.perf_counter() - start, float(model.loss_curve_[-1])


def fit_torch(workload, dtype, params, regression, n_threads, max_iter):
    """The PyTorch peer of the same estimator: (seconds, last epoch's loss)."""
    X, y = workload.regression_data(dtype) if regression else workload.data(dtype)
    peer = torch_mlp.Peer.from_params({**workload.params(max_iter=max_iter), **params},
                                      classifier=not regression)
    seconds, _, loss = torch_mlp.fit(peer, X, y, max_iter, n_threads=n_threads,
                                     track_loss=True)
    return seconds, loss


def _fits(workload, dtype, cases, n_threads, with_torch):
    """{key: function(max_iter) -> (seconds, loss)}: each case's fit, the fits without the
    options (one per kind of estimator, shared by the cases beside it) and PyTorch's."""
    fits = {}
    for case in cases:
        without = _WITHOUT[case.regression]
        fits.setdefault(("nnfast", without), _bind(fit_nnfast, workload, dtype, dict(without),
                                                   case.regression, n_threads))
        fits["nnfast", case.name] = _bind(fit_nnfast, workload, dtype, case.estimator_params,
                                          case.regression, n_threads)
        if with_torch:
            fits["torch", case.name] = _bind(fit_torch, workload, dtype, case.estimator_params,
                                             case.regression, n_threads)
    return fits


def _bind(function, *args):
    return lambda max_iter: function(*args, max_iter)


def run(names, dtypes, case_names=None, repeats=3, n_threads=None, with_torch=True,
        settle=None, progress=None):
    """Times every case on every (workload, dtype); returns one result row per case.

    ``settle``: a function called before every run (``nnfast.cli.bench.settle``).
    """
    cases = [CASES[name] for name in (case_names or CASES)]
    with_torch = with_torch and torch_mlp.available()
    rows = []
    groups = [(name, dtype) for name in names for dtype in dtypes]
    for index, (name, dtype) in enumerate(groups, 1):
        workload = MLP_WORKLOADS[name]
        fits = _fits(workload, np.dtype(dtype), cases, n_threads, with_torch)
        times = {key: [] for key in fits}
        losses = {}
        for repeat in range(repeats):
            for key, fit in fits.items():
                if progress is not None:
                    what = key[1] if isinstance(key[1], str) else "without"
                    print(f"\r[{index}/{len(groups)}] {name:<13} {dtype:<7} {key[0]:<6} "
                          f"{what:<11} run {repeat + 1}/{repeats}   ", end="", file=progress,
                          flush=True)
                if settle is not None:
                    settle()
                fit(bench_mlp.WARMUP_EPOCHS)
                seconds, losses[key] = fit(workload.max_iter)
                times[key].append(seconds)
        seconds = {key: float(np.median(t)) for key, t in times.items()}
        for case in cases:
            ours, torch_key = ("nnfast", case.name), ("torch", case.name)
            without = seconds["nnfast", _WITHOUT[case.regression]]
            rows.append({
                "workload": name, "dtype": dtype, "case": case.name, "option": label(case),
                "without": case.without, "threads": check_n_threads(n_threads),
                "torch_threads": _torch_threads() if with_torch else None,
                "seconds": seconds[ours], "without_seconds": without,
                "ratio": seconds[ours] / without, "ratio_target": case.ratio_target,
                "torch_seconds": seconds.get(torch_key),
                "vs_torch": (seconds[torch_key] / seconds[ours] if torch_key in seconds
                             else None),
                "torch_target": case.torch_target,
                "loss": losses[ours], "torch_loss": losses.get(torch_key),
            })
    if progress is not None:
        print("\r" + " " * 72 + "\r", end="", file=progress, flush=True)
    return rows


def _torch_threads():
    import torch
    return torch.get_num_threads()


def _target(value, bound, at_most):
    if bound is None:
        return "-"
    met = value <= bound if at_most else value >= bound
    return f"{'<=' if at_most else '>='} {bound:g}x {'met' if met else 'MISSED'}"


def format_table(rows):
    """The option rows as a Markdown table: median milliseconds per fit, the ratios and their
    targets, and the last epoch's training loss of each library (PyTorch's columns only when
    some row has them)."""
    has_torch = any(r["torch_seconds"] is not None for r in rows)
    header = ["option workload", "dtype", "threads", "option", "nnfast ms/fit", "without",
              "without ms/fit", "option / without", "target"]
    if has_torch:
        header += ["PyTorch threads", "PyTorch ms/fit", "vs PyTorch", "target"]
    header.append("last loss: nnfast")
    if has_torch:
        header.append("PyTorch")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["workload"], r["dtype"], str(r["threads"]), r["option"],
                 f"{1e3 * r['seconds']:,.2f}", r["without"],
                 f"{1e3 * r['without_seconds']:,.2f}", f"{r['ratio']:.2f}x",
                 _target(r["ratio"], r["ratio_target"], at_most=True)]
        if has_torch:
            measured = r["torch_seconds"] is not None
            cells += [str(r["torch_threads"]) if measured else "-",
                      f"{1e3 * r['torch_seconds']:,.2f}" if measured else "-",
                      f"{r['vs_torch']:.2f}x" if measured else "-",
                      _target(r["vs_torch"], r["torch_target"], at_most=False)
                      if measured else "-"]
        cells.append(f"{r['loss']:.4g}")
        if has_torch:
            cells.append("-" if r["torch_loss"] is None else f"{r['torch_loss']:.4g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
