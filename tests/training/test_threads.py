"""Python threads: fits release the GIL and run concurrently, with bitwise the same results as
alone; fits of one network are serialised; reads see whole states only.

(a) Fits of different networks in 2-4 threads overlap in time and each gives bitwise the
    result of the same fit run alone in the main thread (float32 and float64, full and
    mini-batches, small networks and ones large enough for the kernel's own threads). A long
    compiled fit in a thread leaves the main thread free to run Python.
(b) Two threads fitting the same network: the result is that of one fit after the other, in
    either order, never a mixture (the two fits differ in data, learning rate, batching and
    iterations, so the two orders give different results and a mixture matches neither).
(c) predict (and gradient) called while another thread fits the same network return the
    values of a whole state, before or after some fit, bitwise.
(d) Concurrent fits leave the process's BLAS thread settings as they found them.
(e) scikit-learn estimators seeded by an integer, fitted in several threads at once (each
    fit drawing its weights, split and row orders from its thread's re-seeded random state),
    give bitwise the fits alone.
(f) The kernel's team (nnfast._training.threads.KernelTeam): how many threads share a fit's blocks
    follows the free cores and never changes a result; the caller's OpenMP setting caps the
    default blocks and is restored after every fit.
(g) Predictions through NumPy run small products on one BLAS thread, and restore the
    caller's setting.
"""

import copy
import glob
import os
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import nnfast
from conftest import ATOL, RTOL, kernel_blocks

BACKENDS = ["cython", "numpy"]
DTYPES = [np.float32, np.float64]
# Each concurrent fit should last about this long, so that the fits overlap.
FIT_SECONDS = 0.15


def _data(n_rows, n_in, n_out, seed):
    rs = np.random.RandomState(seed)
    return rs.uniform(-1, 1, (n_rows, n_in)), rs.uniform(0, 1, (n_rows, n_out))


def _iterations_for(net, X, y, seconds, **kwargs):
    """Iterations that make this fit last about `seconds` (at least 5), timed on a copy over
    enough iterations that the fixed cost of a call does not dominate."""
    kwargs = {key: value for key, value in kwargs.items() if key != "iterations"}
    iterations = 5
    while True:
        probe = copy.deepcopy(net)
        start = time.perf_counter()
        probe.fit(X, y, iterations=iterations, **kwargs)
        elapsed = time.perf_counter() - start
        if elapsed >= 0.05 or iterations >= 10**6:
            return max(5, int(iterations * seconds / elapsed))
        iterations *= 4


def _run_threads(functions):
    """Runs each function in its own thread, released together; returns their
    (result, start, end) in order and re-raises the first exception."""
    barrier = threading.Barrier(len(functions))
    outcomes = [None] * len(functions)

    def run(k):
        barrier.wait()
        start = time.perf_counter()
        try:
            result = functions[k]()
        except BaseException as exc:  # reported in the main thread
            outcomes[k] = exc
            return
        outcomes[k] = (result, start, time.perf_counter())

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(functions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a thread did not finish"
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


# --------------------------------------------------------------------------------------------
# (a) different networks in parallel threads
# --------------------------------------------------------------------------------------------

# Every combination of dtype and batching, one per thread. The third network's largest
# product (300 rows x 64 x 128) is above the size at which the kernel runs its own threads
# when built with OpenMP (capping BLAS meanwhile); the others run on the calling thread.
CONFIGS = [
    dict(sizes=[16, 32, 1], rows=200, seed=1, bias=False, n_threads=None, dtype=np.float32,
         batch_size=None),
    dict(sizes=[8, 24, 12, 3], rows=150, seed=2, bias=True, n_threads=None, dtype=np.float64,
         batch_size=32),
    dict(sizes=[64, 128, 4], rows=300, seed=3, bias=False, n_threads=2, dtype=np.float32,
         batch_size=64),
    dict(sizes=[5, 3], rows=97, seed=4, bias=True, n_threads=1, dtype=np.float64,
         batch_size=None),
]


@pytest.mark.parametrize("swap_dtypes", [False, True], ids=["as-listed", "dtypes-swapped"])
@pytest.mark.parametrize("n_python_threads", [2, 4])
def test_concurrent_fits_match_fits_alone(n_python_threads, swap_dtypes):
    jobs = []
    for config in CONFIGS[:n_python_threads]:
        dtype = config["dtype"]
        if swap_dtypes:
            dtype = np.float64 if dtype is np.float32 else np.float32
        X, y = _data(config["rows"], config["sizes"][0], config["sizes"][-1], config["seed"])
        net = nnfast.Network(config["sizes"], seed=config["seed"], dtype=dtype,
                             bias=config["bias"], n_threads=config["n_threads"])
        kwargs = dict(learning_rate=0.3, batch_size=config["batch_size"], shuffle=True)
        kwargs["iterations"] = _iterations_for(net, X, y, FIT_SECONDS, **kwargs)
        jobs.append((net, X, y, kwargs))

    alone = []
    for net, X, y, kwargs in jobs:
        twin = copy.deepcopy(net)
        twin.fit(X, y, **kwargs)
        alone.append(twin)

    outcomes = _run_threads([lambda job=job: job[0].fit(job[1], job[2], **job[3])
                             for job in jobs])
    starts = [start for _, start, _ in outcomes]
    ends = [end for _, _, end in outcomes]
    assert max(starts) < min(ends), "the fits did not overlap in time"
    for (net, _, _, _), twin in zip(jobs, alone):
        assert_array_equal(net.params, twin.params)
        assert net.history == twin.history
        assert_array_equal(net.random_state.get_state()[1], twin.random_state.get_state()[1])
        # The fit trained (so the comparison is not between untouched copies).
        untouched = nnfast.Network(net.sizes, seed=net.seed, dtype=net.dtype, bias=net.bias)
        assert not np.array_equal(net.params, untouched.params)


def _count_for(seconds):
    """Pure-Python work for `seconds`: returns how far a counter got."""
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            count += 1
    return count


def test_compiled_fit_releases_the_gil():
    """While a long compiled fit runs in a thread, the main thread's pure-Python loop keeps
    going at a good fraction of its idle speed (with the GIL held it would stop: a C call
    holding the GIL is never preempted). The network is small, so the fit runs on one core
    (no kernel threads, single-threaded BLAS for such small products) and the loop has the
    other; the bound (20% of the idle speed) leaves room for a busy machine."""
    X, y = _data(256, 16, 1, 0)
    net = nnfast.Network([16, 32, 1], n_threads=1)
    iterations = _iterations_for(net, X, y, 0.4)

    idle_rate = _count_for(0.3) / 0.3
    fit_thread = threading.Thread(target=net.fit, args=(X, y),
                                  kwargs=dict(iterations=iterations))
    count = 0
    fit_thread.start()
    start = time.perf_counter()
    while fit_thread.is_alive():
        for _ in range(1000):
            count += 1
    elapsed = time.perf_counter() - start
    fit_thread.join()
    assert net.iterations_run == iterations
    assert elapsed > 0.2, "the fit was too short to measure anything"
    rate = count / elapsed
    print(f"main thread at {rate / idle_rate:.0%} of its idle speed during a {elapsed:.2f} s fit")
    assert rate > 0.2 * idle_rate, (
        f"the main thread ran at {rate / idle_rate:.1%} of its idle speed during the fit")


# --------------------------------------------------------------------------------------------
# (b) two threads fitting one network
# --------------------------------------------------------------------------------------------

def _two_fits():
    """Two different fits of one [6, 10, 2] network: (X, y, kwargs) each."""
    XA, yA = _data(120, 6, 2, 10)
    XB, yB = _data(90, 6, 2, 11)
    return ((XA, yA, dict(iterations=0, learning_rate=0.5, batch_size=16, shuffle=True)),
            (XB, yB, dict(iterations=0, learning_rate=0.1, batch_size=None)))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fits_of_one_network_are_serialised(backend, dtype):
    initial = nnfast.Network([6, 10, 2], seed=5, dtype=dtype, backend=backend, bias=True)
    (XA, yA, a), (XB, yB, b) = _two_fits()
    a["iterations"] = _iterations_for(initial, XA, yA, 0.08, **a)
    b["iterations"] = _iterations_for(initial, XB, yB, 0.08, **b) + 1
    assert a["iterations"] != b["iterations"]

    a_then_b = copy.deepcopy(initial).fit(XA, yA, **a).fit(XB, yB, **b)
    b_then_a = copy.deepcopy(initial).fit(XB, yB, **b).fit(XA, yA, **a)
    assert not np.array_equal(a_then_b.params, b_then_a.params)

    orders_seen = set()
    for _ in range(3):
        net = copy.deepcopy(initial)
        outcomes = _run_threads([lambda: net.fit(XA, yA, **a), lambda: net.fit(XB, yB, **b)])
        (_, start_a, end_a), (_, start_b, end_b) = outcomes
        if np.array_equal(net.params, a_then_b.params):
            expected, order = a_then_b, "AB"
        elif np.array_equal(net.params, b_then_a.params):
            expected, order = b_then_a, "BA"
        else:
            pytest.fail("the two fits of one network interleaved: the weights match neither "
                        "order of the fits")
        orders_seen.add(order)
        # The rest of the state is that same order's: iterations, history, random state.
        assert net.iterations_run == expected.iterations_run
        assert net.history == expected.history
        assert_array_equal(net.random_state.get_state()[1],
                           expected.random_state.get_state()[1])
        assert net.random_state.get_state()[2] == expected.random_state.get_state()[2]
    assert orders_seen


# --------------------------------------------------------------------------------------------
# (c) reads during a fit
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_reads_during_fits_see_whole_states(backend):
    """predict and gradient while another thread runs a sequence of fits: each result is
    bitwise that of one of the states between the fits. The network is large enough (1.1 MB
    of weights) that copying its weights back takes a while, so a read racing the write-back
    would see a mixture."""
    sizes = [128, 512, 256, 16]
    X, y = _data(64, sizes[0], sizes[-1], 3)
    X_read, y_read = X[:8], y[:8]
    net = nnfast.Network(sizes, seed=2, backend=backend)
    fits = [dict(iterations=2, learning_rate=0.05 * (k + 1)) for k in range(8)]

    twin = copy.deepcopy(net)
    predictions, gradients = [twin.predict(X_read)], [twin.gradient(X_read, y_read)[0]]
    for kwargs in fits:
        twin.fit(X, y, **kwargs)
        predictions.append(twin.predict(X_read))
        gradients.append(twin.gradient(X_read, y_read)[0])
    assert len({p.tobytes() for p in predictions}) == len(predictions)

    done = threading.Event()

    def fit_all():
        try:
            for kwargs in fits:
                net.fit(X, y, **kwargs)
        finally:
            done.set()

    seen = []
    fitter = threading.Thread(target=fit_all)
    fitter.start()
    try:
        while not done.is_set():
            prediction = net.predict(X_read)
            gradient = net.gradient(X_read, y_read)[0]
            p_match = [k for k, p in enumerate(predictions) if np.array_equal(prediction, p)]
            assert p_match, "predict returned values of no whole state (a mixture)"
            g_match = [k for k, g in enumerate(gradients)
                       if all(np.array_equal(a, b) for a, b in zip(gradient, g))]
            assert g_match, "gradient returned values of no whole state (a mixture)"
            seen.append(p_match[0])
    finally:
        fitter.join(timeout=120)
    assert_array_equal(net.predict(X_read), predictions[-1])
    assert seen == sorted(seen), "a read went back to an older state"


# --------------------------------------------------------------------------------------------
# (d) BLAS settings
# --------------------------------------------------------------------------------------------

def _blas_threads():
    from threadpoolctl import threadpool_info
    return {info["filepath"]: info["num_threads"] for info in threadpool_info()
            if info["user_api"] == "blas"}


def _set_blas_threads(limits):
    """Sets the BLAS thread counts ({filepath: n}, or an int for all) and leaves no thread
    in control of them (threadpoolctl >= 3.6 lets only one "controlling" thread change
    OpenBLAS's process-wide setting and silently ignores the others)."""
    import threadpoolctl

    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None),
                    "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
    threadpoolctl.threadpool_limits(limits=limits, user_api=None if isinstance(limits, dict)
                                    else "blas")
    if clear is not None:
        clear(force=True)


@pytest.fixture(autouse=True)
def _restore_blas_threads():
    """Each test here starts from, and leaves behind, the BLAS settings the session had."""
    before = _blas_threads()
    yield
    _set_blas_threads(before)


def test_overlapping_fits_restore_blas_threads():
    """Network caps the process-wide BLAS thread count while a fit with n_threads runs
    (threadpoolctl). Two fits of two networks in two threads that enter and leave their fits
    in the order A, B, A, B (forced with callbacks) must leave the setting as it was before
    either: a user's later NumPy/SciPy work must not be left on fewer BLAS threads."""
    # Products large enough for the cap (nnfast.network._BLAS_THREADED_FLOPS).
    X, y = _data(256, 64, 1, 0)
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()
    capped = []

    def a_reports(iteration, error):
        capped.append(set(_blas_threads().values()))
        a_inside.set()
        assert b_inside.wait(30)
        return False

    def b_reports(iteration, error):
        b_inside.set()
        assert a_done.wait(30)
        return False

    def fit_a():
        try:
            nnfast.Network([64, 32, 1], n_threads=1).fit(X, y, iterations=2,
                                                         callback=a_reports)
        finally:
            a_done.set()

    def fit_b():
        assert a_inside.wait(30)  # B starts once A is inside its fit
        nnfast.Network([64, 32, 1], n_threads=2).fit(X, y, iterations=2, callback=b_reports)

    # A known starting point above A's cap of 1, whatever earlier tests left behind.
    _set_blas_threads(2)
    before = _blas_threads()
    _run_threads([fit_a, fit_b])
    after = _blas_threads()
    assert capped and all(threads == {1} for threads in capped), capped
    assert after == before, (f"BLAS threads left at {sorted(after.values())}, were "
                             f"{sorted(before.values())}")


# Run in a child process: it loads a second copy of NumPy's OpenBLAS, as importing another
# library with its own BLAS (PyTorch, say) would, after nnfast's first capped fit.
_LATE_BLAS_SCRIPT = """
import ctypes, glob, os, shutil, sys
import numpy as np
import threadpoolctl
import nnfast

def blas_threads():
    return {info["filepath"]: info["num_threads"]
            for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"}

X = np.random.RandomState(0).rand(256, 64)  # products large enough for the cap
y = X[:, :1]
network = nnfast.Network([64, 32, 1], n_threads=1)
network.fit(X, y, iterations=2, callback=lambda iteration, error: False)
numpy_libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
library = sorted(glob.glob(os.path.join(numpy_libs, "*openblas*.so*")))[0]
late = shutil.copy(library, sys.argv[1])
ctypes.CDLL(late)
import colorsys  # a module imported, as a library that brings its own BLAS is
late = os.path.realpath(late)
threadpoolctl.ThreadpoolController().select(filepath=late).limit(limits=3)
before = blas_threads()[late]
inside = []
network.fit(X, y, iterations=2,
            callback=lambda iteration, error: inside.append(blas_threads()[late]))
print(before, inside, blas_threads()[late])
"""


def test_blas_loaded_after_the_first_capped_fit_is_capped_and_restored(tmp_path):
    numpy_libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    if not glob.glob(os.path.join(numpy_libs, "*openblas*.so*")):
        pytest.skip("this NumPy has no bundled OpenBLAS to load a second copy of")
    result = subprocess.run([sys.executable, "-c", _LATE_BLAS_SCRIPT, str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    before, inside, after = result.stdout.split(maxsplit=1)[0], *result.stdout.split(
        maxsplit=1)[1].rsplit(maxsplit=1)
    assert (int(before), inside, int(after)) == (3, "[1, 1]", 3), result.stdout


# --------------------------------------------------------------------------------------------
# (e) scikit-learn estimators in parallel threads
# --------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_concurrent_estimator_fits_match_fits_alone():
    pytest.importorskip("sklearn")
    from nnfast.sklearn import MLPClassifier

    X, y = _data(120, 6, 1, 5)
    labels = (y[:, 0] > 0.5).astype(int)
    # Shuffled mini-batches and early stopping: the weights, the split and every epoch's
    # order come from the random state, seeded differently in each thread.
    params = dict(hidden_layer_sizes=(8,), max_iter=15, batch_size=16, early_stopping=True,
                  n_iter_no_change=50)
    seeds = [[3, 4, 5], [6, 7, 8], [9, 10, 11]]

    def fits(thread_seeds):
        return [MLPClassifier(**params, random_state=seed).fit(X, labels).coefs_
                for seed in thread_seeds for _ in range(4)]

    alone = [fits(thread_seeds) for thread_seeds in seeds]
    together = _run_threads([lambda thread_seeds=thread_seeds: fits(thread_seeds)
                             for thread_seeds in seeds])
    for (result, _, _), expected in zip(together, alone):
        for coefs, expected_coefs in zip(result, expected):
            for a, b in zip(coefs, expected_coefs):
                assert_array_equal(a, b)
    assert not np.array_equal(alone[0][0][0], alone[1][0][0])


# --------------------------------------------------------------------------------------------
# (f) the kernel's team
# --------------------------------------------------------------------------------------------

needs_openmp = pytest.mark.skipif(not nnfast._kernels.kernels.OPENMP,
                                  reason="a build without OpenMP has no team")


def _fake_loadavg(tmp_path, monkeypatch, runnable):
    """/proc/loadavg as it reads with `runnable` threads running or ready, on 2 cores."""
    from nnfast._training import threads as _threads

    path = tmp_path / "loadavg"
    path.write_text(f"0.50 0.40 0.30 {runnable}/321 4242\n")
    monkeypatch.setattr(_threads, "_LOADAVG", str(path))
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    monkeypatch.setattr(_threads.os, "cpu_count", lambda: 2)  # every core of the machine
    monkeypatch.setattr(_threads, "REFRESH_SECONDS", 0.0)


@pytest.mark.parametrize("runnable, own_workers, free", [
    (1, 0, 2),   # only the caller: both cores
    (2, 0, 1),   # another library's spinning worker
    (2, 1, 2),   # the caller's own worker, still spinning from its last call
    (5, 1, 1),   # a busy machine: never fewer than the caller's own core
])
def test_free_cores_counts_other_runnable_threads(tmp_path, monkeypatch, runnable,
                                                  own_workers, free):
    from nnfast._training import threads as _threads

    _fake_loadavg(tmp_path, monkeypatch, runnable)
    assert _threads.free_cores(own_workers) == free


def test_confined_to_some_cores_only_this_processs_threads_count(tmp_path, monkeypatch):
    """In a cpuset or under taskset the machine's run queue (here 40 runnable threads of
    other tenants) says nothing about this process's cores: its own running threads count,
    whatever their names hold."""
    from nnfast._training import threads as _threads

    _fake_loadavg(tmp_path, monkeypatch, 40)
    monkeypatch.setattr(_threads.os, "cpu_count", lambda: 64)  # 2 of 64 cores allowed
    tasks = tmp_path / "task"
    states = {"101": "101 (python) R 1 101", "102": "102 (OpenBLAS) worker) S 1 101",
              "103": "103 (spin (x) R) S 1 101"}
    for task, stat in states.items():
        (tasks / task).mkdir(parents=True)
        (tasks / task / "stat").write_text(stat + " 0 0 0\n")
    monkeypatch.setattr(_threads, "_TASKS", str(tasks))
    assert _threads.runnable_threads_of_this_process() == 1
    assert _threads.free_cores() == 2  # only the caller runs
    (tasks / "104").mkdir()
    (tasks / "104" / "stat").write_text("104 (a spinning pool) R 1 101 0 0 0\n")
    assert _threads.runnable_threads_of_this_process() == 2
    assert _threads.free_cores() == 1
    assert _threads.free_cores(own_workers=1) == 2
    monkeypatch.setattr(_threads, "_TASKS", str(tmp_path / "missing"))
    assert _threads.free_cores() == 2  # nothing to count: every core


def test_free_cores_without_a_load_count_is_every_core(tmp_path, monkeypatch):
    from nnfast._training import threads as _threads

    monkeypatch.setattr(_threads, "_LOADAVG", str(tmp_path / "missing"))
    assert _threads.runnable_threads() is None
    assert _threads.free_cores() == _threads.available_cores()


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux's run-queue count")
def test_a_busy_thread_takes_a_core_from_the_count():
    """A thread running NumPy products without the GIL (as OpenBLAS's spinning workers do)
    shows in both counts: on this machine at most cores - 1 are free while it runs (other
    processes' load can only lower it), and it is among this process's running threads."""
    from nnfast._training import threads as _threads

    a = np.random.RandomState(0).random_sample((128, 128))
    stop, started = threading.Event(), threading.Event()

    def busy():
        started.set()
        while not stop.is_set():
            a @ a

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        assert started.wait(30)
        time.sleep(0.05)
        counts = [_threads.free_cores() for _ in range(20)]
        own = [_threads.runnable_threads_of_this_process() for _ in range(20)]
    finally:
        stop.set()
        thread.join()
    cores = _threads.available_cores()
    assert min(counts) <= max(1, cores - 1), counts
    assert max(own) >= 2, own  # the caller and the busy thread, seen among this process's


@needs_openmp
def test_team_follows_free_cores_and_restores_the_callers_setting(tmp_path, monkeypatch):
    from nnfast._training import threads as _threads

    kernels = nnfast._kernels.kernels
    before = kernels.team_threads()
    _fake_loadavg(tmp_path, monkeypatch, 2)  # one other thread running
    monkeypatch.setattr(_threads, "running_among", lambda thread_ids: 0)  # not the team's
    with _threads.KernelTeam(kernels, 2) as team:
        assert team.threads == kernels.team_threads() == 1
        _fake_loadavg(tmp_path, monkeypatch, 1)
        team.refresh()
        assert team.threads == kernels.team_threads() == 2
    assert kernels.team_threads() == before
    with pytest.raises(RuntimeError), _threads.KernelTeam(kernels, 2):
        raise RuntimeError("a failed fit")
    assert kernels.team_threads() == before
    with _threads.KernelTeam(kernels, 1) as team:  # one block: nothing to decide
        assert team.threads == 1 and kernels.team_threads() == before


@needs_openmp
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux thread ids")
def test_a_team_counts_its_own_workers_apart(tmp_path, monkeypatch):
    """The team's OpenMP workers are threads of this process other than the caller, and a
    running one is seen running; a team whose worker runs takes both cores where the run
    queue counts only it and the caller."""
    from nnfast._training import threads as _threads

    kernels = nnfast._kernels.kernels
    workers = kernels.team_worker_ids(2)
    tasks = {int(task) for task in os.listdir("/proc/self/task")}
    assert len(workers) == 1 and set(workers) <= tasks
    assert threading.get_native_id() not in workers
    assert _threads.running_among([threading.get_native_id()]) == 1  # the caller runs
    assert _threads.running_among([0]) == 0  # no such thread
    _fake_loadavg(tmp_path, monkeypatch, 2)
    monkeypatch.setattr(_threads, "running_among", lambda thread_ids: len(thread_ids))
    with _threads.KernelTeam(kernels, 2) as team:
        assert team.threads == 2
    monkeypatch.setattr(_threads, "running_among", lambda thread_ids: 0)
    with _threads.KernelTeam(kernels, 2) as team:
        assert team.threads == 1


def _fits_with_team(monkeypatch, team, fits):
    """Each of fits() run with the kernel's team held at `team` threads."""
    from nnfast._training import threads as _threads

    monkeypatch.setattr(_threads, "free_cores", lambda own_workers=0: team)
    return fits()


@needs_openmp
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_teams_size_never_changes_a_result(monkeypatch, dtype):
    """Blocks fixed by n_threads, shared by one thread or two: bitwise the same fits (the
    original's, a general model's, scikit-learn's adam and L-BFGS), and each equal to the
    NumPy reference's within the suite's tolerances."""
    pytest.importorskip("sklearn")
    from nnfast.sklearn import MLPClassifier

    X, y = _data(512, 64, 10, 7)
    X, y = X.astype(dtype), y.astype(dtype)
    labels = y.argmax(axis=1)

    kernels = nnfast._kernels.kernels
    teams_seen = []

    def fits():
        original = nnfast.Network([64, 256, 10], dtype=dtype, n_threads=2)
        # The team the kernel's parallel regions take (OpenMP's setting of this thread).
        original.fit(X, y, iterations=5, learning_rate=0.01, report_every=1,
                     callback=lambda *_: teams_seen.append(kernels.team_threads()))
        general = nnfast.Network([64, 256, 10], dtype=dtype, n_threads=2, activation="relu",
                                 output="softmax")
        general.fit(X, y / y.sum(axis=1, keepdims=True), iterations=5, learning_rate=0.01,
                    batch_size=512)
        adam = MLPClassifier((256,), max_iter=3, batch_size=512, random_state=0, n_threads=2)
        lbfgs = MLPClassifier((256,), solver="lbfgs", max_iter=5, random_state=0, n_threads=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adam.fit(X, labels)
            lbfgs.fit(X, labels)
        return [original.weights, general.weights, adam.coefs_, lbfgs.coefs_]

    assert kernel_blocks(nnfast.Network([64, 256, 10], dtype=dtype, n_threads=2), 512) == 2
    alone = _fits_with_team(monkeypatch, 1, fits)
    assert set(teams_seen) == {1}
    teams_seen.clear()
    shared = _fits_with_team(monkeypatch, 2, fits)
    assert set(teams_seen) == {2}
    for one, two in zip(alone, shared):
        for a, b in zip(one, two):
            assert_array_equal(a, b)
    reference = nnfast.Network([64, 256, 10], dtype=dtype, backend="numpy")
    reference.fit(X, y, iterations=5, learning_rate=0.01)
    for a, b in zip(alone[0], reference.weights):
        np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=ATOL[dtype])


@needs_openmp
@pytest.mark.parametrize("loop_units, general_path, team_step, blocks", [
    (128, True, False, 1),   # every product a loop on the calling thread: no blocks
    (128, True, True, 2),    # the team step's blocks run the loops on their own threads
    (128, False, False, 2),  # the original's fused step keeps its BLAS blocks
    (0, True, False, 2),     # every product through BLAS, cut into blocks
])
def test_a_fit_whose_every_product_is_a_loop_takes_no_per_product_blocks(
        loop_units, general_path, team_step, blocks):
    """A general-path fit without the team step (L-BFGS, clipping) whose every layer runs as
    the kernel's own loops (runs_as_loops: here 64 -> 100 -> 10 with loop units above 100)
    would share only its elementwise work among threads: it takes one block."""
    from nnfast._training import threads
    from nnfast._training.backends import backend_named

    kernels = nnfast._kernels.kernels
    saved = kernels.get_loop_units()
    kernels.set_loop_units(loop_units)
    try:
        assert kernels.runs_as_loops(64, 100) == (loop_units >= 100)
        network = nnfast.Network([64, 100, 10], n_threads=2, activation="relu",
                                 output="softmax")
        got = threads.kernel_blocks(network, backend_named("cython"), 1797,
                                    team_step=team_step, general_path=general_path)
    finally:
        kernels.set_loop_units(saved)
    assert got == min(blocks, nnfast._validation.available_cores())


@needs_openmp
def test_openmp_limit_caps_the_default_blocks_and_survives_fits():
    """A threadpoolctl OpenMP limit (or OMP_NUM_THREADS) caps nnfast's default threads, an
    explicit n_threads is taken as given, and a fit leaves the limit as it found it."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    kernels = nnfast._kernels.kernels
    X, y = _data(1024, 64, 10, 3)
    default = nnfast.Network([64, 128, 10])
    explicit = nnfast.Network([64, 128, 10], n_threads=2)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert kernels.team_threads() == 1
        assert kernel_blocks(default, len(X)) == 1
        assert kernel_blocks(explicit, len(X)) == min(2, nnfast._validation.available_cores())
        explicit.fit(X, y, iterations=2)
        default.fit(X, y, iterations=2)
        assert kernels.team_threads() == 1


# --------------------------------------------------------------------------------------------
# (g) predictions through NumPy
# --------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("hidden, rows, one_thread", [(20, 50, True), (400, 1000, False)])
def test_predictions_run_small_products_on_one_blas_thread(monkeypatch, hidden, rows,
                                                           one_thread):
    """An estimator's forward pass below PREDICTION_THREADED_FLOPS multiply-adds a layer runs
    NumPy's products on one BLAS thread (no pool left spinning for the next fit), larger ones
    at the caller's setting, which holds before and after either."""
    from threadpoolctl import threadpool_limits

    from nnfast._training import threads as _threads
    from nnfast.sklearn import MLPClassifier, _mlp

    rs = np.random.RandomState(0)
    X, y = rs.normal(size=(rows, 50)), rs.randint(0, 3, rows)
    model = MLPClassifier((hidden,), max_iter=2, random_state=0).fit(X, y)
    assert (_threads.largest_product([50, hidden, 3], rows)
            < _threads.PREDICTION_THREADED_FLOPS) == one_thread
    seen = []
    activate = _mlp._activate
    monkeypatch.setattr(_mlp, "_activate",
                        lambda name, z: (seen.append(_blas_threads()), activate(name, z)))
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        model.predict_proba(X)
        assert _blas_threads() == before
    assert seen and all(set(s.values()) == ({1} if one_thread else set(before.values()))
                        for s in seen)
