"""A fit's threads: the process-wide cap on BLAS threads, and the kernel's thread team.

BLAS's thread count is one setting for the whole process, so concurrent fits share one cap:
the first fit to ask saves BLAS's setting and applies its limit, later ones may lower it, and
the last one to finish restores the saved setting, whatever order the fits end in.

The kernel cuts each batch (the team step of dense stochastic fits) or each large product
into a fixed number of blocks (``kernel_blocks``), which fixes its arithmetic;
``KernelTeam`` decides, between kernel calls, how many threads share those blocks. In a
user's process other thread pools keep cores busy after their own
work: NumPy's and SciPy's OpenBLAS workers spin for about 0.1 s after each threaded call,
scikit-learn's OpenMP workers briefly, a joblib worker's fit all the time. A kernel thread
that shares a core with one of them holds up every barrier of the fit (measured: a digits
fit on two threads right after NumPy's matrix products ran 2.0x its quiet time, 4.4x after
SciPy's). So the team takes only the cores no other thread is running on, as the kernel's
run queue counts them (``/proc/loadavg``'s runnable entities, or this process's running
threads when it may use only some of the machine's cores: ``free_cores``), re-read at most
every ``REFRESH_SECONDS``; the results are the same bit for bit whatever the team's size.

The BLAS libraries are looked up again only when modules were imported since the last
lookup (``_blas_controller``): threadpoolctl finds them by reading the process's memory map,
which costs milliseconds, and a fit or a ``loss_gradient`` call that takes the cap would
otherwise pay that twice per call (an L-BFGS fit makes hundreds of such calls). A BLAS that
arrives later comes with an import (PyTorch's, say), which the count of modules shows.
"""

import math
import os
import sys
import threading
import time

from .._validation import available_cores, check_n_threads

# A layer product of at least this many multiply-adds per batch makes the kernel cut its
# products into blocks for threads, each product in its own parallel region (the original's
# fused step, loss_gradient, sparse and clipped fits). Measured on 2 cores (AMD EPYC,
# AVX-512; MLPClassifier, adam, (100,) or (256,) units, batches of 200 and 1,000): in a
# quiet process two threads gained 6-15% at 1.3M multiply-adds (digits), 16-47% from 2.6M to
# 65M, in float32 and float64; two blocks on one thread lost 9% to one block at 1.3M.
PARALLEL_MIN_FLOPS = 1 << 21
# The same for dense stochastic fits, which the kernel's team step threads in one parallel
# region per call, each batch cut into row blocks. Measured the same way (batches of 200,
# two threads against one block): 1.44-1.50x at 0.41M multiply-adds (32 -> 64 units),
# 1.3-1.6x at digits' 1.28M in float64, 1.1-1.4x in float32, 1.2-1.7x at 20000x40's 0.8M;
# below 0.25M (16 -> 64) they lost 7-10%. Two blocks on one thread (another pool holding
# the other core) cost 0-6% against one block at these sizes.
TEAM_MIN_FLOPS = 1 << 19
# Without kernel threads, an explicit n_threads caps BLAS only from this product size on;
# below it BLAS runs single-threaded anyway and the cap would cost more than the fit.
BLAS_THREADED_FLOPS = 1 << 16
# A threaded fit calls the kernel for about this many multiply-adds at a time (5-15 ms on
# two cores: a call's Python around it stays under 1%; another pool spins for about 100 ms),
# re-deciding its team between calls (KernelTeam).
TEAM_CHECK_WORK = 3e8
# Epochs per kernel call at most: bounds the per-call epoch-loss buffer, so that a fit's
# memory does not depend on its length.
MAX_CHUNK_EPOCHS = 1 << 16
# The kernel looks at the clock about every this much work (a fraction of a millisecond
# optimised, a few in a debug build) and polls for Ctrl-C when 20 ms have passed; work is
# counted in multiply-adds, a parameter's update per batch as UPDATE_WORK of them (Adam's).
CLOCK_LOOK_WORK = 1e6
UPDATE_WORK = 10

# How often a fit looks again at how many cores are free (a read of /proc/loadavg costs
# about 10 us; an OpenBLAS pool spins for about 0.1 s).
REFRESH_SECONDS = 0.002
# A team of up to this many workers (besides the calling thread) tells its own running
# workers from other threads by reading each one's state (about 10 us a read).
MAX_WORKERS_READ = 8
_LOADAVG = "/proc/loadavg"
_TASKS = "/proc/self/task"

_guard = threading.Lock()
_active = 0
_saved = None  # {library path: its thread count before the first fit}
_current = None
_controller = None
_modules_seen = None  # len(sys.modules) at the last lookup


def _release_blas_control():
    """Lets whichever thread comes next set OpenBLAS's thread count. threadpoolctl >= 3.6
    gives that right to the first thread that uses it and silently ignores any other, but a
    cap taken in one fit's thread may have to be lowered or restored in another's; every
    change made here is serialised by _guard, so the process-wide setting stays consistent."""
    import threadpoolctl

    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None),
                    "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


def _blas_controller():
    """threadpoolctl's controller of the process's BLAS libraries, looked up anew only
    after an import."""
    global _controller, _modules_seen
    if _controller is None or len(sys.modules) != _modules_seen:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(user_api="blas")
        _modules_seen = len(sys.modules)
    return _controller


class blas_thread_cap:
    """Context manager: BLAS uses at most ``limit`` threads inside; None changes nothing."""

    def __init__(self, limit):
        self.limit = limit

    def __enter__(self):
        global _active, _saved, _current
        if self.limit is None:
            return self
        with _guard:
            controller = _blas_controller()
            if _active == 0:
                _saved, _current = {}, self.limit
            else:
                _current = min(_current, self.limit)
            # Libraries found since the cap was taken are saved before they are limited.
            for info in controller.info():
                _saved.setdefault(info["filepath"], info["num_threads"])
            _release_blas_control()
            controller.limit(limits=_current)
            _release_blas_control()
            _active += 1
        return self

    def __exit__(self, *exc_info):
        global _active, _saved, _current
        if self.limit is None:
            return False
        with _guard:
            _active -= 1
            if _active == 0:
                controller = _blas_controller()
                _release_blas_control()
                for library in controller.lib_controllers:
                    if library.filepath in _saved:
                        library.set_num_threads(_saved[library.filepath])
                _release_blas_control()
                _saved = _current = None
        return False


def runnable_threads():
    """Threads the kernel counts as running or ready to run on the whole machine, the caller
    included; None where the count is not available (not Linux)."""
    try:
        with open(_LOADAVG, "rb") as handle:
            fields = handle.read().split()
        return int(fields[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        return None


def runnable_threads_of_this_process():
    """This process's threads that are running or ready to run (state R in
    /proc/self/task/*/stat), the caller included; None where that is not available."""
    try:
        tasks = os.listdir(_TASKS)
    except OSError:
        return None
    return running_among(tasks)


def running_among(thread_ids):
    """How many of this process's threads with these Linux thread ids are running or ready
    to run (state R in /proc/self/task/<id>/stat); a thread that ended meanwhile does not
    count."""
    running = 0
    for thread_id in thread_ids:
        try:
            with open(f"{_TASKS}/{thread_id}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # the thread ended meanwhile
        # "pid (name) state ...": the name may hold spaces and parentheses.
        if stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] == b"R":
            running += 1
    return running


def takes_team_step(plan, sparse):
    """Whether a threaded fit of this plan trains by the kernel's team step (each batch in
    row blocks, one parallel region per call): dense X, no clipping. The kernel decides the
    same way (its _team_steps) and checks that the workspace has the blocks' buffers."""
    return not sparse and plan.max_grad_norm is None


def free_cores(own_workers=0):
    """Cores no other thread is running on, the caller's counted as free. own_workers: the
    caller's kernel threads besides itself that may still be spinning from its last call
    (not someone else's).

    On a machine whose every core this process may use, every runnable thread counts (the
    machine's run queue). Confined to some of its cores (a container's cpuset, taskset), the
    machine's count says nothing about those cores, so only this process's threads count
    (other libraries' spinning pools, fits in other Python threads).
    """
    cores = available_cores()
    whole_machine = cores >= (os.cpu_count() or cores)
    running = runnable_threads() if whole_machine else runnable_threads_of_this_process()
    if running is None:
        return cores
    others = max(0, running - 1 - own_workers)
    return max(1, cores - others)


class KernelTeam:
    """Context manager: the threads that run one fit's kernel blocks, in the calling thread.

    ``blocks`` is the kernel's n_threads argument (the blocks each large product is cut
    into). On entry and at each ``refresh`` (called before every kernel call, acting at most
    every ``REFRESH_SECONDS``) the team becomes min(blocks, free cores); on exit the calling
    thread's OpenMP setting is restored. OpenMP's thread count is a per-thread setting, so
    fits in other Python threads keep theirs. With one block there is no team to decide.

    The team's own OpenMP workers keep spinning for a while after each kernel call (and
    after the previous fit's), and the run queue counts them as running: up to
    ``MAX_WORKERS_READ`` workers, the team reads which of them run (their thread ids, from
    the kernel) and counts only the rest as other threads, so that its own idle workers never
    shrink it (they did: a 20000x40 fit ran 40% of its epochs on one thread, its second
    thread spinning idle beside it). With more workers it assumes those of its last
    team run, which a read per worker every 2 ms would cost more than.
    """

    def __init__(self, kernels, blocks):
        self._kernels = kernels
        self.blocks = blocks
        self.threads = 1 if blocks <= 1 else None
        self._saved = None
        self._decided_at = 0.0
        self._worker_ids = ()

    def __enter__(self):
        if self.blocks > 1:
            self._saved = self._kernels.team_threads()
            if self.blocks - 1 <= MAX_WORKERS_READ:
                self._worker_ids = self._kernels.team_worker_ids(self.blocks)
            self.threads = None
            self.refresh()
        return self

    def refresh(self):
        """Re-decides the team's size if REFRESH_SECONDS have passed since the last time."""
        if self._saved is None:
            return
        now = time.monotonic()
        if self.threads is not None and now - self._decided_at < REFRESH_SECONDS:
            return
        if self._worker_ids:
            own_workers = running_among(self._worker_ids)
        else:
            own_workers = 0 if self.threads is None else self.threads - 1
        threads = min(self.blocks, free_cores(own_workers))
        if threads != self.threads:
            self._kernels.set_team_threads(threads)
            self.threads = threads
        self._decided_at = now

    def __exit__(self, *exc_info):
        if self._saved is not None:
            self._kernels.set_team_threads(self._saved)
            self._saved = None
        return False


class FitThreads:
    """Context manager: a fit's BLAS cap and kernel team, taken together; ``refresh`` before
    each kernel call."""

    def __init__(self, blas_cap, team):
        self._blas_cap = blas_cap
        self.team = team

    def __enter__(self):
        self._blas_cap.__enter__()
        try:
            self.team.__enter__()
        except BaseException:
            self._blas_cap.__exit__(None, None, None)
            raise
        return self

    def refresh(self):
        self.team.refresh()

    def __exit__(self, *exc_info):
        try:
            self.team.__exit__(*exc_info)
        finally:
            self._blas_cap.__exit__(*exc_info)
        return False


# ------------------------------------------------------------------ a fit's thread policy


def row_widths(sizes, row_inputs=None):
    """The layer widths a row's products multiply: the first layer's row_inputs when given
    (sparse X: its non-zeros, not its width, are the work)."""
    return list(sizes) if row_inputs is None else [row_inputs, *sizes[1:]]


def largest_product(sizes, batch_rows, row_inputs=None):
    """Multiply-adds of the largest matrix product of a step on batch_rows rows."""
    widths = row_widths(sizes, row_inputs)
    return batch_rows * max(a * b for a, b in zip(widths, widths[1:]))


def kernel_blocks(network, backend, batch_rows, row_inputs=None, team_step=False,
                  general_path=False):
    """The blocks the kernel cuts each large product into for batches of batch_rows rows
    (its n_threads argument), which fix its arithmetic: the threads that share them are
    decided as the fit runs (``KernelTeam``).

    More than one only when the backend threads (the compiled kernel with OpenMP) and the
    largest product is big enough to repay a fork; small networks run on the calling thread,
    which is faster. By default one per core, at most the calling thread's OpenMP setting
    (OMP_NUM_THREADS, a threadpoolctl limit); an explicit n_threads is taken as given (up to
    the cores). row_inputs: the first layer's inputs a row really multiplies (sparse X).
    team_step: the fit trains by the kernel's team step (dense, stochastic, unclipped),
    which repays threads from smaller products (TEAM_MIN_FLOPS). general_path: the products
    are the general path's (not the original's fused step), some of which run as the
    kernel's own loops on the calling thread (``runs_as_loops``).
    """
    requested = min(check_n_threads(network.n_threads), available_cores())
    if not backend.threaded:
        return 1
    if network.n_threads is None:
        requested = min(requested, max(1, backend.team_threads()))
    if requested == 1:
        return 1
    threshold = TEAM_MIN_FLOPS if team_step else PARALLEL_MIN_FLOPS
    if largest_product(network.sizes, batch_rows, row_inputs) < threshold:
        return 1
    if general_path and not team_step and row_inputs is None and all(
            backend.kernels.runs_as_loops(a, b)
            for a, b in zip(network.sizes, network.sizes[1:])):
        # Every product runs as the kernels' loops on the calling thread (an L-BFGS fit of
        # digits beside a BLAS without AVX-512 kernels): blocks would share only the
        # elementwise work, which measured 10-12% slower than one thread.
        return 1
    return requested


def epochs_between_team_checks(sizes, blocks, n_rows, row_inputs=None):
    """Epochs per kernel call at most, so that a threaded fit re-decides its team every few
    milliseconds (another pool's spinning ends, another fit starts); MAX_CHUNK_EPOCHS for
    one block, where there is no team."""
    if blocks <= 1:
        return MAX_CHUNK_EPOCHS
    widths = row_widths(sizes, row_inputs)
    work_per_epoch = 3 * n_rows * sum(a * b for a, b in zip(widths, widths[1:]))
    return max(1, min(MAX_CHUNK_EPOCHS, int(TEAM_CHECK_WORK // work_per_epoch)))


def fit_threads(network, backend, blocks, batch_rows, row_inputs=None):
    """The threads a fit holds: the kernel's team for ``blocks`` blocks, and BLAS's cap.

    The compiled kernel's BLAS calls get one thread each (two pools on the same cores would
    take turns spinning; the kernel's blocks are its threads), except in a build without
    OpenMP, where BLAS's threads are the only ones. The NumPy backend's BLAS keeps its own
    default, or n_threads when the caller set it. The cap is process-wide, so it is only
    taken when the products are big enough for BLAS to thread them.
    """
    product = largest_product(network.sizes, batch_rows, row_inputs)
    if blocks > 1 or (backend.threaded and product >= BLAS_THREADED_FLOPS):
        # The kernel owns the threading: below its blocks' size BLAS's own threads gained
        # 20% on digits in a quiet process, and lost 1.4-1.8x right after other libraries'
        # BLAS work, whose spinning threads hold the core they need.
        cap = blas_thread_cap(1)
    elif network.n_threads is not None and product >= BLAS_THREADED_FLOPS:
        cap = blas_thread_cap(min(network.n_threads, available_cores()))
    else:
        cap = blas_thread_cap(None)
    return FitThreads(cap, KernelTeam(backend.kernels, blocks))


# A forward pass through NumPy (the estimators' predictions and validation scores,
# Network.predict) whose largest product is below this many multiply-adds runs BLAS on one
# thread. A threaded NumPy product leaves OpenBLAS's workers spinning for about 0.1 s on
# the cores the next fit needs: a cross-validation's scoring of one fold slowed the next
# fold's fit (measured: cross_val_score of scaler + MLPClassifier on digits, cv=5, 0.64 s
# with threaded predictions, 0.41-0.42 s with one thread; the cap costs about 20 us a call).
PREDICTION_THREADED_FLOPS = 1 << 24


def prediction_threads(sizes, rows):
    """The BLAS cap for a forward pass of rows rows through layers of these widths:
    one thread below PREDICTION_THREADED_FLOPS, BLAS's own setting from there on."""
    small = largest_product(sizes, rows) < PREDICTION_THREADED_FLOPS
    return blas_thread_cap(1 if small else None)


def check_every(sizes, batch_size):
    """Batches between the kernel's looks at the clock for a Ctrl-C poll (0: never, off the
    main thread, where a poll would only take the GIL: only the main thread handles
    signals)."""
    if threading.current_thread() is not threading.main_thread():
        return 0
    weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    work_per_batch = 3 * batch_size * weights + UPDATE_WORK * weights
    return max(1, math.ceil(CLOCK_LOOK_WORK / work_per_batch))
