"""``nnfast.dask.fit``: places the shards, runs the rounds of a fit on the cluster and
commits the result (the package docstring says how).
"""


import dataclasses
import signal
import threading
import time
import uuid

import dask
import distributed
import numpy as np

from .. import reference
from .._training.backends import backend_named
from .._training.driver import Reports, drive, progress_bar
from .._training.layout import param_views
from .._training.options import check_fit_arguments, check_model_options, fit_plan
from .._training.transaction import FitTransaction, TrainingDivergedError
from .._validation import (check_inputs, check_int, check_sample_weight, check_target_range,
                           check_targets)
from ..network import Network
from ._cluster import client_for_fit
from ._data import check_dask_data, is_dask_array, shards_from_dask, shards_from_numpy
from ._tasks import (
    ShardSpec,
    add_partials,
    release_workspaces,
    same,
    shard_gradient,
    shard_local_fit,
    shard_local_steps,
    shard_loss_gradient,
)

# Partial sums are added pairwise: a tree of depth log2(shards), each node on the worker that
# holds the larger share of its inputs (Dask's placement), so same-worker pairs move nothing.
_FAN_IN = 2
# A round that fails because a worker died is tried again this many times in all, after
# waits doubling from _RETRY_DELAY seconds (0.25 + 0.5 + 1 + 2 s): time for the scheduler to
# notice the loss and for a nanny to restart the worker.
_ROUND_ATTEMPTS = 5
_RETRY_DELAY = 0.25


def _pin(worker):
    """The ``workers=`` of a task meant for worker ("": a shard whose holder is not known
    while Dask recomputes it; the task then goes where the scheduler likes)."""
    return [worker] if worker else None


class WorkerLostError(RuntimeError):
    """The cluster lost data that Dask cannot recompute; the network keeps its pre-fit state."""


class _InterruptLatch:
    """Keeps a Ctrl-C that Python swallowed: a KeyboardInterrupt raised while a finalizer
    runs (Dask releases futures in ``__del__``, on the main thread, in the middle of a
    wait) is printed as "Exception ignored" and lost, and the fit would go on. While a fit
    runs on the main thread with Python's default handler, SIGINT also sets a flag, which
    the step loop checks after each round (milliseconds). Other handlers are left alone."""

    def __init__(self):
        self.pressed = False
        self._installed = False

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame):
        self.pressed = True
        raise KeyboardInterrupt

    def check(self):
        """KeyboardInterrupt if Ctrl-C came during the fit (raised or not at the time)."""
        if self.pressed:
            raise KeyboardInterrupt

    def __exit__(self, *exc_info):
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return False


def fit(network, X, y, iterations=10000, learning_rate=None, *, client=None, sync_every=1,
        verbose=0, callback=None, progress=False, sample_weight=None, resume=False,
        report_every=None):
    """Trains ``network`` in place on (X, y) held by the workers of a Dask cluster.

    With ``sync_every=1`` (the default) every iteration is one full-batch step of
    ``Network.fit``: the client sends the parameters to one worker, which passes them on
    along a binary tree of copy tasks so that every worker holding shards gets them once,
    each shard's gradient
    ``G_s = Network.gradient(X_s, y_s)`` is computed where the shard lives, the partial sums
    are added pairwise on the workers, and the client applies ``W += learning_rate * sum_s G_s``.
    This is ``network.fit(X, y, iterations, learning_rate)`` on all rows at once, up to the
    rounding of the gradient's summation order, with the same ``history``.

    A network with other model options (activations, outputs, ``alpha``, ``reduction``,
    ``SGD`` / ``Adam``, output ``"original"`` with any of them) or sample weights trains the
    same way on ``Network.loss_gradient``'s arithmetic, computed on the workers by the
    compiled kernel (``_kernels.loss_gradient``; the NumPy reference for
    ``backend="numpy"``): each shard sums its rows' weighted gradient ``a.T @ d`` and data
    loss; the client adds ``alpha * W``, divides as ``reduction`` says (``"mean"``: by the
    weight of all rows, a local fit's full batch) and applies the network's optimizer to
    that full-batch gradient exactly as a local full-batch fit does, its state
    (``optimizer_state``, ``resume``) included.

    Parameters
    ----------
    network : nnfast.Network
        Trained in place, as by ``network.fit``; returned.
    X : dask.array.Array or array_like (n_rows, sizes[0])
        A dask array is used as chunked: one shard per row chunk (its chunks must hold whole
        rows); it is computed and kept in the workers' memory once, and Dask recomputes a
        shard lost with a worker from its source. A NumPy array is checked here, split into
        one shard per worker thread and scattered; a shard lost with its worker then ends
        the fit with ``WorkerLostError``.
    y : dask.array.Array or array_like (n_rows, sizes[-1]), or (n_rows,) for one output
        Rechunked to X's row chunks when they differ.
    iterations : int >= 0
        Full-batch steps, as ``Network.fit``'s iterations.
    learning_rate : float or None
        As ``Network.fit``: None is the optimizer's rate (1.0 for the original's plain step,
        ``W += learning_rate * G`` with G summed, not averaged, over all rows).
    client : distributed.Client or None
        The cluster to train on. None: the current client (``distributed.default_client()``)
        when there is one, otherwise a ``LocalCluster`` on this machine for the duration of
        the call (loopback only, one single-threaded worker process per core; see
        ``local_cluster``), closed afterwards.
    sync_every : int >= 1
        K: the workers combine their work every K iterations instead of every iteration
        (local SGD / federated averaging), for any model and optimizer. A round starts from
        the common parameters W and optimizer state S. Let shard s (the rows of one chunk)
        hold total weight w_s of all rows' W_tot (its rows and all rows when there are no
        sample weights) and p_s = w_s / W_tot. Each shard takes k full-batch epochs of the
        network's own model and optimizer on its own rows alone, from W and a copy of S,
        with its rows' weights multiplied by 1 / p_s: its loss is then its estimate of the
        whole data's (the same L2 term, and for ``"mean"`` the same denominator W_tot), so
        every local step is an estimate of a full step. k = K except in a fit's last round,
        which takes the remaining iterations. Then the shards are averaged by weight:
        ``W <- W + sum_s p_s (W_s - W)`` and ``S <- S + sum_s p_s (S_s - S)`` (SGD's
        velocities, Adam's moments); Adam's step count advances by k and ``samples_seen``
        by k times the rows of all shards (each local epoch counts as an epoch of all rows,
        so ``"invscaling"`` follows the same course). A shard of zero weight takes no part.
        With K = 1 and the plain step or SGD the average is exactly one full-batch step
        (the step is linear in the gradient); ``sync_every=1`` always runs the exact path
        above (Adam's step is not linear in the gradient). For the original's model the
        shard's step is ``W_s <- W_s + (learning_rate / p_s) * G_s(W_s)``. Reports
        (``verbose``, ``callback``, ``progress``, ``history``) fall on round starts: their
        spacing is rounded up to a multiple of K, and the error reported is that of all rows
        at W (``mean |y - output|`` for output ``"original"``, else the loss).
    verbose : int
        If K > 0, print the error at iterations 0, K, 2K, ..., as ``Network.fit`` prints it
        (``Error:<mean |y - output|>`` for output ``"original"``, else the loss).
    callback : callable or None
        ``callback(iteration, error)`` at each report (every ``verbose`` iterations, else
        every ``iterations // 100``); returning True stops the fit at the next report point,
        as ``Network.fit`` does.
    progress : bool
        Show a progress bar (needs the optional ``tqdm``).
    sample_weight : array_like (n_rows,), dask.array.Array or None
        As ``Network.fit``'s (finite, >= 0, not all zero, with its messages): each row's
        loss and gradient are scaled by its weight. A dask array is rechunked to X's row
        chunks when they differ; its chunks are checked where they are computed, and a
        chunk may be all zero. NumPy weights are checked here and split with the rows.
    resume, report_every
        As ``Network.fit``.

    Returns
    -------
    network

    Raises
    ------
    TrainingDivergedError
        When the error stops being finite, naming the iteration.
    WorkerLostError
        When a worker is lost with data Dask cannot recompute (scattered NumPy shards).
    ValueError, TypeError
        For bad input, with ``Network.fit``'s messages (a dask array's chunk says its rows),
        before any step runs.

    Whatever the exception, ``KeyboardInterrupt`` included, the network is left exactly as
    it was before the call: the fit trains a copy of the parameters and writes it back only
    when it completes.
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be an nnfast.Network, got {type(network).__name__}")
    check_model_options(network)
    arguments = check_fit_arguments(
        network, iterations=iterations, learning_rate=learning_rate, verbose=verbose,
        callback=callback, progress=progress, resume=resume, report_every=report_every)
    sync_every = check_int(sync_every, "sync_every", minimum=1)
    # Everything the client can check is checked before a cluster is started or reached.
    if any(is_dask_array(a) for a in (X, y, sample_weight)):
        X, y, sample_weight = check_dask_data(X, y, network.sizes, network.dtype,
                                              sample_weight)
        make_shards = shards_from_dask
    else:
        X = check_inputs(X, network.sizes, network.dtype)
        y = check_target_range(check_targets(y, X.shape[0], network.sizes, network.dtype),
                               network.output)
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, X.shape[0], network.dtype)
        make_shards = shards_from_numpy
    plan = fit_plan(network, arguments.learning_rate, arguments.resume, X.shape[0], False,
                    sample_weight is not None)
    if plan.schedule == "cosine" or plan.max_grad_norm is not None:
        # The rounds step the optimizer on averaged gradients and states, epoch counts
        # apart: neither the schedule's position nor a step's whole gradient is defined there.
        raise ValueError("nnfast.dask.fit does not support the 'cosine' schedule or "
                         "max_grad_norm; train with Network.fit, or use an optimizer without "
                         "them")
    if plan.drops:
        # Each round evaluates the full-batch gradient, which uses every unit.
        raise ValueError(f"nnfast.dask.fit does not support dropout (dropout="
                         f"{network.dropout}); train with Network.fit, or set dropout=0")
    if not plan.is_original:
        # The compiled model must exist here as on the workers.
        backend_named(network.backend).require_general()

    iterations = arguments.iterations
    bar = progress_bar(iterations) if arguments.progress else None
    reports = Reports.of_fit(iterations, verbose=arguments.verbose,
                             callback=arguments.callback, bar=bar,
                             report_every=arguments.report_every, output=network.output,
                             dtype=network.dtype)
    if sync_every > 1:  # reports only at round starts
        reports = dataclasses.replace(
            reports, every=-(-reports.every // sync_every) * sync_every)
    try:
        with client_for_fit(client) as active, FitTransaction(
                network, plan, resume=arguments.resume,
                learning_rate=arguments.learning_rate) as transaction:
            state = None if plan.is_original else transaction.optimizer_state
            trainer = _Trainer(active, network, plan, state, sync_every)
            try:
                trainer.place(make_shards, X, y, sample_weight)
                done, history = trainer.run(transaction.params, iterations, reports)
                trainer.release()
            finally:
                trainer.close()
            transaction.commit(history, done,
                               hint=f" (learning_rate={trainer.learning_rate} too large?)")
    finally:
        if bar is not None:
            bar.close()
    return network


class _Trainer:
    """One fit's state on the client: the shards' futures and the step loop."""

    def __init__(self, client, network, plan, state, sync_every):
        self.client = client
        self.network = network
        self.plan = plan
        self.state = state  # OptimizerState (a copy) of a general model's fit, else None
        self.optimizer = None if state is None else reference.make_optimizer(plan, state)
        self.learning_rate = plan.learning_rate
        self.sync_every = sync_every
        self.shards = []
        self.holders = []
        self.in_flight = []
        self.spec = None
        self.n_rows = 0
        self.total_weight = 0.0
        self.recomputable = False

    def place(self, make_shards, X, y, sample_weight):
        """Puts the checked shards in worker memory; raises the first data error."""
        net = self.network
        self.shards, rows, self.total_weight = make_shards(
            self.client, X, y, sample_weight, net.sizes, net.dtype, net.output)
        self.recomputable = make_shards is shards_from_dask
        self.n_rows = X.shape[0]
        self.spec = ShardSpec(fit_id=uuid.uuid4().hex, sizes=tuple(net.sizes), bias=net.bias,
                              dtype=net.dtype.name, backend=net.backend, max_rows=max(rows),
                              plan=None if self.plan.is_original else self.plan,
                              n_rows=self.n_rows, total_weight=self.total_weight)
        self._locate_shards()

    def run(self, params, iterations, reports):
        """``Network.fit``'s loop (chunks between reports, ``nnfast._training.driver``), with
        steps on the cluster, training params in place. Returns (iterations done, history)."""
        with _InterruptLatch() as interrupt:
            return drive(
                lambda start, n_steps: (self._run_steps(params, n_steps, start, interrupt),),
                iterations, reports, max_chunk=max(1, iterations), every_epoch_loss=False)

    def _run_steps(self, params, n_steps, done, interrupt):
        """n_steps iterations from iteration ``done``, updating params in place; returns the
        first one's error (mean |y - output|, or the loss of a general model)."""
        first_error = None
        step = 0
        while step < n_steps:
            k = min(self.sync_every, n_steps - step)
            total = self._round(params, k)
            if self.state is None:
                error = self._original_update(params, total, done + step)
            elif self.sync_every == 1:
                error = self._general_update(params, total, done + step)
            else:
                error = self._general_round_update(params, total, done + step, k)
            if first_error is None:
                first_error = error
            step += k
            interrupt.check()
        return first_error

    def _original_update(self, params, total, iteration):
        """The original's step (or a sync_every round) from the shards' sum."""
        error = total.abs_error_sum / (self.n_rows * self.network.sizes[-1])
        if total.diverged or not np.isfinite(error):
            raise TrainingDivergedError(
                f"training diverged at iteration {iteration}: the output error is no "
                f"longer finite (learning_rate={self.learning_rate} too large?); the "
                "weights are left as they were before this fit")
        with np.errstate(over="ignore"):  # inf weights are reported as the kernel does
            if self.sync_every == 1:
                params += params.dtype.type(self.learning_rate) * total.vector
            else:
                params += total.vector
        return error

    def _general_update(self, params, total, iteration):
        """loss_gradient's arithmetic from the shards' unpenalised sums, then the optimizer's
        step and end of epoch, as the reference runner's full-batch epoch."""
        plan, net = self.plan, self.network
        # "mean" divides by all rows' weight, as a local fit's full batch (rows: no weights).
        denom = self.total_weight if plan.reduction == "mean" else 1
        grad = total.vector
        weights = param_views(params, net.sizes, net.bias)[0]
        weight_grads, bias_grads = param_views(grad, net.sizes, net.bias)
        with np.errstate(all="ignore"):  # a non-finite loss is reported below
            for k, weight in enumerate(weights):
                reference.finish_gradient(weight_grads[k],
                                          None if bias_grads is None else bias_grads[k],
                                          weight, plan.alpha, plan.reduction, denom)
            loss = self._loss(total)
            if plan.output != "original":  # whose reported error is mean |y - output| only
                # Summed in float64, as the kernel sums the squared weights of a local fit.
                penalty = sum(float(np.dot(w.ravel(), w.ravel())) for w in weights)
                loss += 0.5 * plan.alpha * penalty / denom
        self._check_loss(total, loss, iteration)
        with np.errstate(all="ignore"):
            self.optimizer.update_params(params, grad)
        self.state.samples_seen += self.n_rows
        self.optimizer.iteration_ends(self.state.samples_seen)
        return loss

    def _loss(self, total):
        """The loss of all rows from the shards' sum: the original's mean |y - output| for
        output "original", else the weighted mean data loss (penalty terms aside)."""
        if self.plan.output == "original":
            return total.abs_error_sum / (self.n_rows * self.network.sizes[-1])
        return total.abs_error_sum / self.total_weight

    def _check_loss(self, total, loss, iteration):
        if total.diverged or not np.isfinite(loss):
            raise TrainingDivergedError(
                f"training diverged at iteration {iteration}: the loss is no longer finite "
                f"(learning rate {self.state.learning_rate} too large?); the network is left "
                "as it was before this fit")

    def _general_round_update(self, params, total, iteration, n_steps):
        """A ``sync_every`` round of a general model: the shards' weighted average change of
        the parameters and of the optimizer state, and the counters of n_steps epochs."""
        state, n_params = self.state, params.size
        # The shards' losses at the round's start carry the L2 term already (their weights
        # sum to 1), so the loss of all rows at W is _loss's weighted mean.
        loss = self._loss(total)
        self._check_loss(total, loss, iteration)
        params += total.vector[:n_params]
        state.values += total.vector[n_params:]
        if self.plan.optimizer_name == "adam":
            state.step += n_steps  # one full batch per epoch, as in every shard
        for _ in range(n_steps):
            state.samples_seen += self.n_rows
            self.optimizer.iteration_ends(state.samples_seen)
        return loss

    def _round(self, params, n_steps):
        """One round on the cluster (``_round_once``), tried again after a lost worker when
        Dask can recompute everything the round needs (shards from dask arrays)."""
        delay = _RETRY_DELAY
        for attempt in range(_ROUND_ATTEMPTS):
            try:
                return self._round_once(params, n_steps)
            except (OSError, distributed.client.FutureCancelledError) as exc:
                # A result from, or a transfer to, a worker that just died. The round's
                # tasks go; the shards stay (Dask recomputes lost ones from their source).
                self.client.cancel(self.in_flight)
                self.in_flight = []
                failure = exc
            except distributed.scheduler.KilledWorker as exc:  # Dask gave up on a task
                failure = exc
                break
            if attempt + 1 < _ROUND_ATTEMPTS:
                time.sleep(delay)  # for the scheduler to see the worker go
                delay *= 2
                if not self.recomputable and self._shard_lost():
                    break
                self._locate_shards()
        raise WorkerLostError(
            f"the cluster lost a worker during the fit and could not recover "
            f"({type(failure).__name__}: {failure})"
            + ("" if self.recomputable else "; NumPy data is scattered to the workers and "
               "cannot be recomputed, pass dask arrays to let Dask recompute lost shards")
            + ". The network is left as it was before this fit") from failure

    def _locate_shards(self):
        """Which worker holds each shard; neighbours in the reduction tree should share one,
        so the shards are ordered by holder."""
        holders = self.client.who_has(self.shards)
        order = sorted(range(len(self.shards)),
                       key=lambda i: (tuple(holders.get(self.shards[i].key, ())), i))
        self.shards = [self.shards[i] for i in order]
        self.holders = [(holders.get(shard.key) or ("",))[0] for shard in self.shards]

    def _shard_lost(self):
        return any(shard.status != "finished" for shard in self.shards)

    def _round_once(self, params, n_steps):
        """One broadcast, one task per shard, the tree sum; the Partial on the client.

        Everything is tasks of one graph (one message to the scheduler, one result back),
        and every task can be recomputed: a lost worker's part is redone elsewhere.
        """
        client = self.client
        if self.sync_every > 1 and self.state is not None:  # the optimizer state travels too
            params = np.concatenate([params, self.state.values])
        copies = self._broadcast(params)
        if self.sync_every == 1:
            task = shard_gradient if self.state is None else shard_loss_gradient
            parts = [client.submit(task, self.spec, copies[holder], shard, pure=False)
                     for shard, holder in zip(self.shards, self.holders)]
        elif self.state is not None:
            state = self.state
            counters = (state.step, state.samples_seen, state.learning_rate)
            parts = [client.submit(shard_local_fit, self.spec, copies[holder], shard, n_steps,
                                   counters, pure=False)
                     for shard, holder in zip(self.shards, self.holders)]
        else:
            parts = [client.submit(shard_local_steps, self.spec, copies[holder], shard, n_steps,
                                   self.learning_rate, pure=False)
                     for shard, holder in zip(self.shards, self.holders)]
        self.in_flight = list(copies.values()) + parts
        while len(parts) > 1:
            parts = [client.submit(add_partials, *parts[i:i + _FAN_IN], pure=False)
                     if len(parts[i:i + _FAN_IN]) > 1 else parts[i]
                     for i in range(0, len(parts), _FAN_IN)]
            self.in_flight += parts
        total = parts[0].result()
        self.in_flight = []
        return total

    def _broadcast(self, params):
        """{worker: future of params held there}, for every worker holding shards.

        The parameters go from the client to the first worker inside a task; from there a
        binary tree of copy tasks, each pinned to its worker, passes them on: every worker
        that has them sends them to one that has not, so n workers have them after
        ceil(log2 n) rounds of transfers. A copy whose worker is gone runs elsewhere.
        """
        client = self.client
        workers = list(dict.fromkeys(self.holders))
        with dask.config.set({"distributed.admin.large-graph-warning-threshold":
                              f"{max(10 * 2**20, 2 * params.nbytes)}B"}):
            copies = {workers[0]: client.submit(same, params, workers=_pin(workers[0]),
                                                allow_other_workers=True, pure=False)}
        pending = workers[1:]
        while pending:
            for source in list(copies):
                if not pending:
                    break
                target = pending.pop(0)
                copies[target] = client.submit(same, copies[source], workers=_pin(target),
                                               allow_other_workers=True, pure=False)
        return copies

    def release(self):
        """Frees the workers' scratch buffers of this fit (after a completed fit; a failed
        one leaves them to the workers' own limit of kept fits, to fail fast)."""
        try:
            self.client.run(release_workspaces, self.spec.fit_id)
        except Exception:  # a lost worker has nothing to release; best effort
            pass

    def close(self):
        """Cancels what this fit still has on the cluster: its shards and, after an error or
        an interrupt, the tasks of the unfinished step."""
        if self.in_flight:
            self.client.cancel(self.in_flight)
        if self.shards:
            self.client.cancel(self.shards)
