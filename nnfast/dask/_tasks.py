"""The work ``nnfast.dask.fit`` sends to Dask workers: one shard's part of a step.

Nothing here calls Dask: these are plain functions of NumPy arrays. A shard is one chunk of
rows held in a worker's memory as ``(x, y, w)``, already validated and converted to the
network's dtype (``prepare_shard``); w is the rows' sample weights, or None. Every task
returns a ``Partial``: a flat vector in the parameter layout of ``nnfast._training.layout`` (for
``sync_every`` rounds of a general model, followed by the optimizer state's values), the
shard's part of the error or loss, and whether the shard's training diverged.
``add_partials`` sums partials; the client builds a tree of it.

Scratch buffers for the kernel are kept per worker thread and per fit (``_workspace``), so a
step allocates only its result vector, as a local fit allocates once per fit; a
``sync_every`` round of a general model allocates its runner's buffers once per round.
"""

import dataclasses
import threading
from collections import OrderedDict, namedtuple
from dataclasses import dataclass

import numpy as np

from .. import reference
from .._training.backends import backend_named
from .._training.layout import (
    allocate_general_workspace,
    allocate_workspace,
    param_views,
)
from .._training.plan import OptimizerState
from .._validation import (
    check_inputs,
    check_sample_weight,
    check_target_range,
    check_targets,
)

Partial = namedtuple("Partial", ["vector", "abs_error_sum", "diverged"])

# Fits whose scratch buffers a worker keeps; older ones are dropped when a new fit arrives
# (the client also releases them at the end of each fit, but it cannot reach a lost worker).
_KEPT_FITS = 4
_WORKSPACES = OrderedDict()
_WORKSPACES_GUARD = threading.Lock()


@dataclass(frozen=True)
class ShardSpec:
    """What a worker needs to know about the network and the fit (a few bytes per task)."""

    fit_id: str
    sizes: tuple
    bias: bool
    dtype: str
    backend: str
    max_rows: int  # the largest shard's rows: one workspace per thread serves every shard
    plan: object = None  # the fit's FitPlan, for models other than the original's
    n_rows: int = 0  # rows of all shards together
    total_weight: float = 0.0  # their sample weights' sum (n_rows without weights)


def prepare_shard(x, y, w, sizes, dtype, start, output="original"):
    """(x, y, w) of one chunk as the kernel needs them, with ``Network.fit``'s checks.

    The messages are ``Network.fit``'s, followed by the chunk's row range, so an error raised
    on a worker says where the bad rows are. w (sample weights, or None) may be all zero in
    one chunk; the client checks that the weights of all chunks are not.
    """
    try:
        x = check_inputs(x, sizes, dtype)
        y = check_target_range(check_targets(y, x.shape[0], sizes, dtype), output)
        if w is not None:
            array = np.asarray(w)
            if array.dtype.kind in "iuf" and array.shape == (x.shape[0],) and not array.any():
                w = np.zeros(x.shape[0], dtype=dtype)  # zeros pass every other check
            else:
                w = check_sample_weight(w, x.shape[0], dtype)
    except (TypeError, ValueError) as exc:
        stop = start + len(x)
        raise type(exc)(f"{exc} (in rows {start} to {stop - 1} of the data)") from None
    return x, y, w


def weight_sum(shard):
    """The shard's total sample weight (its rows without weights), in float64."""
    x, _, w = shard
    return float(x.shape[0]) if w is None else float(w.sum(dtype=np.float64))


def _workspace(spec, general=False):
    """This thread's scratch buffers for the fit spec.fit_id (allocated on first use)."""
    key = (threading.get_ident(), general)
    with _WORKSPACES_GUARD:
        per_fit = _WORKSPACES.get(spec.fit_id)
        if per_fit is None:
            per_fit = _WORKSPACES[spec.fit_id] = {}
            while len(_WORKSPACES) > _KEPT_FITS:
                _WORKSPACES.popitem(last=False)
        workspace = per_fit.get(key)
        if workspace is None:
            workspace = per_fit[key] = (
                allocate_general_workspace(spec.sizes, spec.bias, spec.max_rows,
                                           np.dtype(spec.dtype), training=False,
                                           slopes=spec.plan.keeps_slopes) if general
                else allocate_workspace(spec.sizes, spec.max_rows, np.dtype(spec.dtype),
                                        shuffled=False))
    return workspace


def release_workspaces(fit_id):
    """Drops a finished fit's scratch buffers (run on every worker by the client)."""
    with _WORKSPACES_GUARD:
        _WORKSPACES.pop(fit_id, None)


def _scratch(spec, n_rows):
    """This thread's original-path workspace for n_rows rows: exactly-sized views of its
    activations and deltas (the kernel takes them so), no gathered-row buffers (the shard's
    rows are one full batch in stored order)."""
    workspace = _workspace(spec)
    used = n_rows * sum(spec.sizes[1:])
    no_rows = np.empty(0, dtype=workspace["grad"].dtype)
    return {"activations": workspace["activations"][:used],
            "deltas": workspace["deltas"][:used], "grad": workspace["grad"],
            "batch_x": no_rows, "batch_y": no_rows}


def _general_workspace(spec):
    """This thread's buffers for ``_kernels.loss_gradient`` (the general path) for this fit;
    they hold up to spec.max_rows rows, and the kernel takes buffers at least that large."""
    return _workspace(spec, general=True)


def shard_gradient(spec, params, shard):
    """The shard's part of one full-batch step: ``Network.gradient`` of its rows at params.

    Returns
    -------
    Partial
        The gradient G (the step adds ``learning_rate * G``) and the shard's sum |y - output|
        of the same forward pass.
    """
    x, y, _ = shard
    vector, abs_error_sum = backend_named(spec.backend).original_gradient(
        params, spec.sizes, spec.bias, x, y, 1, with_error=True,
        workspace=_scratch(spec, x.shape[0]))
    return Partial(vector, abs_error_sum, not np.isfinite(abs_error_sum))


def shard_local_steps(spec, params, shard, n_steps, learning_rate):
    """``n_steps`` full-batch steps of the original's model on the shard's rows alone, from
    params (``sync_every``), on the shard's estimate of the whole data's gradient.

    The shard's gradient G_s sums n_s of the N rows; its steps use ``(N / n_s) * G_s``,
    i.e. the learning rate times N / n_s.

    Returns
    -------
    Partial
        The change of the parameters (after - params) times n_s / N (the shard's share of
        the average), the shard's sum |y - output| at params (the first step's forward pass)
        and whether a step's error stopped being finite.
    """
    x, y, _ = shard
    share = x.shape[0] / spec.n_rows
    learning_rate = learning_rate / share
    local = params.copy()
    run = backend_named(spec.backend).original_run(
        spec.sizes, spec.bias, x, y, learning_rate, x.shape[0], False, 1, 0,
        workspace=_scratch(spec, x.shape[0]))
    first_error, diverged_at = run(local, n_steps, None)
    first_error, diverged = float(first_error), diverged_at is not None
    local -= params
    local *= local.dtype.type(share)
    # The kernel reports the mean over the shard's outputs; the client wants sums to add up.
    return Partial(local, first_error * y.size, bool(diverged) or not np.isfinite(local).all())


def same(value):
    """value itself: a task whose result is a copy of its input on the worker it runs on."""
    return value


def shard_loss_gradient(spec, params, shard):
    """The shard's part of the full-batch loss and gradient of a model other than the
    original's, with the network's backend (``loss_gradient_into``, as
    ``Network.loss_gradient``).

    The shard's rows are summed, unpenalised: the gradient ``a.T @ d`` (``reduction="sum"``,
    ``alpha=0``, each row's delta times its sample weight) and the data loss times the
    shard's total weight; for output ``"original"`` the sum |y - output| (unweighted, the
    original's error) instead. The client adds the shards, then the L2 term and the
    division that ``reduction`` and ``alpha`` ask for.
    """
    x, y, w = shard
    n_rows = x.shape[0]
    total = weight_sum(shard)
    plan = dataclasses.replace(spec.plan, reduction="sum", alpha=0.0, batch_size=n_rows,
                               shuffled=False, weighted=w is not None)
    original = plan.output == "original"
    grad = np.empty_like(params)
    backend = backend_named(spec.backend)
    with np.errstate(all="ignore"):  # a non-finite loss is reported by the client
        loss, output = backend.loss_gradient_into(plan, params, x, y, w, grad,
                                                  workspace=_general_workspace(spec))
    if original:
        with np.errstate(all="ignore"):
            value = float(np.abs(y - output).sum())
    else:  # a shard of zero weight adds nothing (its weighted mean loss is 0 / 0)
        value = float(loss) * total if total > 0 else 0.0
    return Partial(grad, value, not np.isfinite(value))


def shard_local_fit(spec, start, shard, n_steps, counters):
    """``n_steps`` full-batch epochs of the network's model and optimizer on the shard's rows
    alone (``sync_every`` for models other than the original's).

    The shard s, of total weight w_s out of all shards' W (rows when unweighted), trains
    on its rows with sample weights ``w_i * W / w_s``: its loss is its estimate of the whole
    data's, with the same L2 term (for ``"mean"``, the same denominator W). It starts from
    the common parameters and a copy of the common optimizer state (``start`` = params then
    state values; ``counters`` = (step, samples_seen, learning_rate)); each local epoch
    counts N rows towards ``samples_seen`` as an epoch of the whole data does, so that
    schedules follow the same course.

    Returns
    -------
    Partial
        ``(w_s / W) * (end - start)`` (params then state values), the shard's part of the
        loss at the start (its first epoch's loss times w_s; for output ``"original"`` its
        sum |y - output|), and whether an epoch's loss or the result stopped being finite.
    """
    x, y, w = shard
    n_rows = x.shape[0]
    plan = spec.plan
    original = plan.output == "original"
    total = weight_sum(shard)
    if total == 0:  # no weight: no say in the average; its error still counts for "original"
        value = 0.0
        if original:
            weights, biases = param_views(start[:plan.n_params], plan.sizes, plan.bias)
            output = reference.predict_model(weights, biases, x, plan.activations, plan.output)
            value = float(np.abs(y - output).sum())
        return Partial(np.zeros_like(start), value, not np.isfinite(value))
    share = total / spec.total_weight
    scaled = (np.ones(n_rows, dtype=start.dtype) if w is None else w) / start.dtype.type(share)
    plan = dataclasses.replace(plan, batch_size=n_rows, shuffled=False, weighted=True)
    run = backend_named(spec.backend).make_runner(plan, x, y, scaled, 1, 0)
    params = start[:plan.n_params].copy()
    step, samples_seen, learning_rate = counters
    state = OptimizerState(start[plan.n_params:].copy(), step, samples_seen, learning_rate)
    first = None
    for epoch in range(n_steps):
        # The runner adds n_rows at the epoch's end; a whole epoch adds the fit's N.
        state.samples_seen = samples_seen + epoch * spec.n_rows + (spec.n_rows - n_rows)
        losses, _, diverged = run(params, state, 1, None)
        first = float(losses[0]) if first is None else first
        if diverged:
            return Partial(np.zeros_like(start), first, True)
    change = np.concatenate([params, state.values])
    change -= start
    change *= start.dtype.type(share)
    value = first * (y.size if original else total)  # sums to add up, as the exact mode's
    return Partial(change, value, not (np.isfinite(value) and np.isfinite(change).all()))


def add_partials(*partials):
    """The sum of partials, in the order given (one node of the reduction tree)."""
    vector = partials[0].vector.copy()
    for part in partials[1:]:
        vector += part.vector
    return Partial(vector, sum(part.abs_error_sum for part in partials),
                   any(part.diverged for part in partials))
