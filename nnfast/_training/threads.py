"""A fit's threads: the process-wide cap on BLAS threads, and the kernel's thread team.

BLAS's thread count is one setting for the whole process, so concurrent fits share one cap:
the first fit to ask saves BLAS's setting and applies its limit, later ones may lower it, and
the last one to finish restores the saved setting, whatever order the fits end in.

The kernel cuts each large product into a fixed number of blocks (``Network._kernel_threads``),
which fixes its arithmetic; ``KernelTeam`` decides, between kernel calls, how many threads
share those blocks. In a user's process other thread pools keep cores busy after their own
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

import os
import sys
import threading
import time

from .._validation import available_cores

# How often a fit looks again at how many cores are free (a read of /proc/loadavg costs
# about 10 us; an OpenBLAS pool spins for about 0.1 s).
REFRESH_SECONDS = 0.002
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
    running = 0
    for task in tasks:
        try:
            with open(os.path.join(_TASKS, task, "stat"), "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # the thread ended meanwhile
        # "pid (name) state ...": the name may hold spaces and parentheses.
        if stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] == b"R":
            running += 1
    return running


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
    """

    def __init__(self, kernels, blocks):
        self._kernels = kernels
        self.blocks = blocks
        self.threads = 1 if blocks <= 1 else None
        self._saved = None
        self._decided_at = 0.0

    def __enter__(self):
        if self.blocks > 1:
            self._saved = self._kernels.team_threads()
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
