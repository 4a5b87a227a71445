"""Hostile shapes, sizes and values.

(a) Degenerate shapes: 1 row, 1 input unit, 1-unit hidden and output layers, rows that
    batch_size does or does not divide (remainder of one row, exact multiples), batch_size 1
    and batch_size above the row count, on both code paths of the products (plain loops and
    BLAS): fit, predict and gradient of every kernel build agree with the reference.
(b) Sizes whose buffers cannot exist: refused with ValueError or MemoryError, promptly,
    never a crash. Run in child processes (a crash must not take the test run with it); the
    ones whose allocations would otherwise be attempted run under an address-space limit
    (``RLIMIT_AS``) of 2 GiB above the child's own size, so "cannot fit in memory" is true
    on any machine and a failed allocation is immediate instead of swapping or waking the
    OOM killer.
(c) Bad arguments to every entry point (``Network(...)``, ``fit``, ``predict``, ``gradient``,
    ``nonlin``, ``Network.load``) that tests/test_validation.py and tests/test_persistence.py
    do not already cover: a TypeError or ValueError naming the problem, the network
    untouched, never a crash or a low-level error (OverflowError, MemoryError from a tiny
    file).
(d) Inputs of magnitude up to 1e4 and the extremes of the float types train without NaN,
    agree with the reference and raise no floating-point warnings.
"""

import io
import os
import re
import struct
import subprocess
import sys
import textwrap
import warnings
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import nnfast
from conftest import INTERRUPTIBLE_PROLOGUE, child_env, kernel_build

BACKENDS = ["cython", "numpy"]
DTYPES = [np.float32, np.float64]
# One forward/backward pass (predict, gradient) on inputs in [-1, 1] and weights of O(1),
# kernel against reference, relative to the largest value: sums of at most a few hundred
# terms, so a few hundred ulp.
PASS_RTOL = {np.float32: 1e-4, np.float64: 1e-12}


def _max_difference(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# --------------------------------------------------------------------------------------------
# (a) degenerate shapes
# --------------------------------------------------------------------------------------------

SHAPES = [
    # id, sizes, rows, batch_size
    ("one-row", [3, 4, 1], 1, None),
    ("one-row-blas", [128, 64, 2], 1, None),       # 1 x 128 x 64: a BLAS product of one row
    ("one-input", [1, 5, 2], 20, None),
    ("one-input-blas", [1, 300, 1], 20, None),     # inner dimension 1 through BLAS
    ("one-hidden", [4, 1, 3], 20, None),
    ("one-output", [4, 6, 1], 20, None),
    ("ones", [1, 1, 1], 1, None),
    ("ones-deep", [1, 1, 1, 1], 7, None),
    ("remainder-one", [3, 5, 2], 21, 5),           # 4 batches of 5 and one of 1 row
    ("remainder-one-k1", [3, 5, 2], 6, 5),         # 1 batch of 5 and one of 1 row
    ("exact-multiple", [3, 5, 2], 20, 5),          # 4 batches of 5, no remainder
    ("exact-multiple-blas", [40, 50, 3], 60, 20),  # the same through BLAS
    ("batch-one", [3, 5, 2], 13, 1),
    ("batch-above-rows", [3, 5, 2], 20, 25),
    ("batch-equals-rows", [3, 5, 2], 20, 20),
    ("batch-rows-minus-one", [3, 5, 2], 20, 19),   # rows = 1 * batch + 1
]


def _shape_data(sizes, rows, dtype, seed=0):
    rs = np.random.RandomState(seed)
    X = rs.uniform(-1, 1, (rows, sizes[0])).astype(dtype)
    y = rs.uniform(0, 1, (rows, sizes[-1])).astype(dtype)
    return X, y


@pytest.mark.parametrize("shuffle", [False, True], ids=["stored-order", "shuffled"])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("case_id, sizes, rows, batch_size", SHAPES, ids=[s[0] for s in SHAPES])
def test_degenerate_shapes_match_reference(case_id, sizes, rows, batch_size, bias, shuffle,
                                           dtype, kernels):
    X, y = _shape_data(sizes, rows, dtype)
    cy = nnfast.Network(sizes, seed=3, dtype=dtype, bias=bias)
    ref = nnfast.Network(sizes, seed=3, dtype=dtype, bias=bias, backend="numpy")
    start = ref.params.copy()
    kwargs = dict(iterations=30, learning_rate=0.5, batch_size=batch_size, shuffle=shuffle)
    with kernel_build(kernels):
        cy.fit(X, y, **kwargs)
    ref.fit(X, y, **kwargs)
    # Some of these fits amplify rounding differences (see _tolerance); measured per case.
    tolerance = _tolerance(sizes, X, y, dtype, bias, kwargs, ref.params)
    assert _max_difference(cy.params, ref.params) <= tolerance
    assert _max_difference(ref.params, start) > 1e-3  # it trained
    assert_array_equal(cy.random_state.get_state()[1], ref.random_state.get_state()[1])

    # One pass on the same (trained) weights: a single rounding difference per sum.
    twin = nnfast.Network(sizes, dtype=dtype, bias=bias, backend="numpy")
    twin.params[...] = cy.params
    with kernel_build(kernels):
        prediction = cy.predict(X)
        gradient_w, gradient_b = cy.gradient(X, y)
    assert prediction.shape == (rows, sizes[-1]) and prediction.dtype == dtype
    assert _max_difference(prediction, twin.predict(X)) <= PASS_RTOL[dtype]
    twin_w, twin_b = twin.gradient(X, y)
    for got, expected in zip(gradient_w, twin_w):
        assert got.shape == expected.shape
        scale = max(1.0, float(np.abs(expected).max()))
        assert _max_difference(got, expected) <= PASS_RTOL[dtype] * scale
    if bias:
        for got, expected in zip(gradient_b, twin_b):
            scale = max(1.0, float(np.abs(expected).max()))
            assert _max_difference(got, expected) <= PASS_RTOL[dtype] * scale
    else:
        assert gradient_b is None and twin_b is None


# --------------------------------------------------------------------------------------------
# (b) sizes whose buffers cannot exist
# --------------------------------------------------------------------------------------------

# Capping a child's address space needs Linux: RLIMIT_AS is not enforced on macOS, Windows
# has no rlimits, and the child's own size is read from /proc. Elsewhere the one test that
# needs the cap does not run; the others here need only the prelude's attempt().
CAN_CAP_ADDRESS_SPACE = sys.platform.startswith("linux")

PRELUDE = textwrap.dedent("""
    import time
    import numpy as np
    import nnfast

    def limit_address_space(extra_bytes=2 * 2**30):
        import resource
        # Warm up first (BLAS and OpenMP thread pools), then cap at the current size + extra.
        nnfast.Network([64, 128, 4], n_threads=2).fit(np.zeros((300, 64)), np.zeros((300, 4)),
                                                      iterations=1)
        with open("/proc/self/status") as status:
            size = [int(line.split()[1]) * 1024 for line in status
                    if line.startswith("VmSize:")][0]
        resource.setrlimit(resource.RLIMIT_AS, (size + extra_bytes, size + extra_bytes))

    def attempt(label, function):
        start = time.perf_counter()
        try:
            function()
            outcome = "returned"
        except (ValueError, MemoryError, TypeError) as exc:
            outcome = type(exc).__name__
        print(f"{label}: {outcome} in {time.perf_counter() - start:.3f} s", flush=True)
""")


def _run_child(code, timeout=120):
    result = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=timeout, env=child_env())
    return result.returncode, result.stdout, result.stderr


def _outcomes(stdout):
    """{label: (outcome, seconds)} from the child's attempt() lines."""
    found = {}
    for line in stdout.splitlines():
        label, sep, rest = line.rpartition(": ")
        if sep and rest.endswith(" s") and " in " in rest:
            outcome, _, seconds = rest[:-2].partition(" in ")
            found[label] = (outcome, float(seconds))
    return found


def _assert_refused(returncode, stdout, stderr, expected):
    """Every label in expected ({label: allowed outcomes}) was refused promptly (< 5 s)."""
    assert returncode == 0, f"the child died (returncode {returncode})\n{stdout}\n{stderr}"
    found = _outcomes(stdout)
    for label, allowed in expected.items():
        assert label in found, f"{label}: no outcome\n{stdout}\n{stderr}"
        outcome, seconds = found[label]
        assert outcome in allowed, f"{label}: {outcome}, expected one of {allowed}"
        assert seconds < 5, f"{label}: took {seconds:.1f} s to refuse"


IMPOSSIBLE_SIZES = {
    "[10**6, 10**6, 1]": [10**6, 10**6, 1],        # 8 TB of weights
    "[2**31, 1]": [2**31, 1],                      # a width no BLAS int holds
    "[2**31 - 1, 2**31 - 1]": [2**31 - 1, 2**31 - 1],  # 4.6e18 weights: bytes overflow int64
    "[2**31 - 1] * 3": [2**31 - 1] * 3,
    "[2**40, 2**40]": [2**40, 2**40],
    "[2**62, 4]": [2**62, 4],
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_impossible_sizes_are_refused_promptly(dtype):
    code = "\n".join(f"attempt({label!r}, lambda: nnfast.Network({sizes!r}, dtype='{dtype}'))"
                     for label, sizes in IMPOSSIBLE_SIZES.items())
    _assert_refused(*_run_child(code), {label: ("ValueError", "MemoryError")
                                        for label in IMPOSSIBLE_SIZES})


@pytest.mark.skipif(not CAN_CAP_ADDRESS_SPACE,
                    reason="an address-space cap (RLIMIT_AS and /proc) needs Linux")
def test_buffers_beyond_memory_are_refused_promptly():
    """Under a 2 GiB address-space allowance: a network whose weights need 16 GiB, and the
    workspace or outputs of fit, gradient and predict on 10**6 rows of a 50000-unit layer
    (373 GiB), on both backends. A failed fit leaves the network as it was and usable."""
    code = """
    limit_address_space()
    attempt("weights 16 GiB", lambda: nnfast.Network([1, 2**31 - 1]))
    attempt("weights 16 GiB float32", lambda: nnfast.Network([1, 2**31 - 1], dtype="float32"))
    X, y = np.zeros((10**6, 1)), np.zeros(10**6)
    for backend in ("cython", "numpy"):
        net = nnfast.Network([1, 50000, 1], backend=backend)
        before = net.params.copy()
        attempt(f"{backend} fit", lambda: net.fit(X, y, iterations=1))
        attempt(f"{backend} fit batches", lambda: net.fit(X, y, iterations=1, batch_size=10**5))
        attempt(f"{backend} gradient", lambda: net.gradient(X, y))
        attempt(f"{backend} predict", lambda: net.predict(X))
        assert np.array_equal(net.params, before), "a failed fit changed the weights"
        net.fit(X[:50], y[:50], iterations=2)
        assert net.iterations_run == 2 and np.isfinite(net.predict(X[:50])).all()
        print(f"{backend} still usable", flush=True)
    """
    returncode, stdout, stderr = _run_child(code)
    labels = ["weights 16 GiB", "weights 16 GiB float32"] + [
        f"{backend} {what}" for backend in BACKENDS
        for what in ("fit", "fit batches", "gradient", "predict")]
    _assert_refused(returncode, stdout, stderr,
                    {label: ("ValueError", "MemoryError") for label in labels})
    for backend in BACKENDS:
        assert f"{backend} still usable" in stdout, stderr


# --------------------------------------------------------------------------------------------
# (c) bad arguments, entry point by entry point
# --------------------------------------------------------------------------------------------

_X = [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]]
_Y = [0, 1, 1, 0]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(seed=2**32), ValueError, "(?i)seed"),
    (dict(seed=np.uint64(2**64 - 1)), ValueError, "(?i)seed"),
    (dict(dtype=">f8"), ValueError, "dtype"),      # big-endian float64 is not the native type
    (dict(bias=1), TypeError, "bias"),
    (dict(bias="yes"), TypeError, "bias"),
    (dict(bias=None), TypeError, "bias"),
    (dict(sizes=(width for width in [3, 1])), TypeError, "sizes"),
    (dict(sizes=np.array([[3, 1]])), TypeError, "sizes"),
])
def test_network_bad_arguments(kwargs, error, match):
    kwargs = {"sizes": [3, 1], **kwargs}
    with pytest.raises(error, match=match):
        nnfast.Network(kwargs.pop("sizes"), **kwargs)


FIT_BAD_OPTIONS = [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=-3), ValueError, "batch_size"),
    (dict(batch_size=2.0), TypeError, "batch_size"),
    (dict(batch_size=True), TypeError, "batch_size"),
    (dict(batch_size="8"), TypeError, "batch_size"),
    (dict(shuffle="yes"), TypeError, "shuffle"),
    (dict(shuffle=None), TypeError, "shuffle"),
    (dict(verbose=-1), ValueError, "verbose"),
    (dict(verbose=1.5), TypeError, "verbose"),
    (dict(callback=3), TypeError, "callback"),
    (dict(callback="print"), TypeError, "callback"),
    # fit refuses a non-bool shuffle; its other flag must not take any truthy object either.
    (dict(progress="yes"), TypeError, "progress"),
]


@pytest.mark.parametrize("kwargs, error, match", FIT_BAD_OPTIONS,
                         ids=[f"{k}={v!r}" for (kw, _, _) in FIT_BAD_OPTIONS
                              for k, v in kw.items()])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_bad_options_leave_the_network(kwargs, error, match, backend, capsys):
    net = nnfast.Network([3, 4, 1], backend=backend, bias=True).fit(_X, _Y, iterations=5)
    before = net.params.copy()
    state = net.random_state.get_state()
    with pytest.raises(error, match=match):
        net.fit(_X, _Y, iterations=5, **kwargs)
    assert_array_equal(net.params, before)
    assert_array_equal(net.random_state.get_state()[1], state[1])
    assert capsys.readouterr().err == ""  # no progress bar was started


GRADIENT_BAD = [
    (np.zeros((4, 2)), _Y, ValueError, "columns"),
    (np.zeros(3), _Y, ValueError, "2-D"),
    (np.zeros((0, 3)), np.zeros(0), ValueError, "at least one row"),
    (np.array([[np.nan, 0, 1]] * 4), _Y, ValueError, "NaN"),
    (np.full((4, 3), 1e400, dtype=np.longdouble), _Y, ValueError, "infinite|too large"),
    ([[0, 0, 1], [0, 1], [1, 0, 1], [1, 1, 1]], _Y, TypeError, "numeric"),
    (np.array(_X).astype(str), _Y, TypeError, "integers or floats"),
    (_X, _Y[:3], ValueError, "rows"),
    (_X, np.zeros((4, 2)), ValueError, "columns"),
    (_X, [0, 1, np.inf, 0], ValueError, "infinite"),
    (_X, np.array(_Y, dtype=object), TypeError, "numeric"),
    (_X, np.array(_Y, dtype=complex), TypeError, "integers or floats"),
]


@pytest.mark.parametrize("X_bad, y_bad, error, match", GRADIENT_BAD)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_bad_inputs(X_bad, y_bad, error, match, backend):
    net = nnfast.Network([3, 4, 1], backend=backend)
    before = net.params.copy()
    with pytest.raises(error, match=match):
        net.gradient(X_bad, y_bad)
    assert_array_equal(net.params, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_of_values_beyond_float64_is_refused(backend):
    with pytest.raises(ValueError, match="infinite|too large"):
        nnfast.Network([3, 1], backend=backend).predict(np.full((2, 3), 1e400,
                                                                dtype=np.longdouble))


@pytest.mark.parametrize("x", [
    pytest.param([[1.0, 2.0], [3.0]], id="ragged"),
    pytest.param({"a": 1.0}, id="dict"),
    pytest.param(10**400, id="int-beyond-float"),
    pytest.param(np.array(["1.0"]), id="str-array"),
])
@pytest.mark.parametrize("deriv", [False, True])
def test_nonlin_bad_inputs(x, deriv):
    # fit and predict report ragged input as a TypeError; NumPy's own ValueError is accepted
    # here too, as long as nothing else (and no crash) comes out.
    with pytest.raises((TypeError, ValueError)):
        nnfast.nonlin(x, deriv=deriv)


HUGE_N_THREADS = """
X = np.random.RandomState(0).uniform(-1, 1, (300, 64))
y = np.random.RandomState(1).uniform(0, 1, (300, 4))
for n_threads in (100_000, 2**40):
    def fit():
        # Large enough that the kernel runs its own threads when it has OpenMP.
        nnfast.Network([64, 128, 4], n_threads=n_threads).fit(X, y, iterations=2)
    attempt(f"n_threads={n_threads}", fit)
"""


def test_absurd_thread_counts_are_refused_or_capped():
    """n_threads passes validation with any int >= 1. A count no machine has must either be
    refused (ValueError) or capped at what the machine can run; never crash the process
    (100000 OpenMP threads) or leak an OverflowError from the kernel's C int."""
    returncode, stdout, stderr = _run_child(HUGE_N_THREADS)
    _assert_refused(returncode, stdout, stderr,
                    {"n_threads=100000": ("ValueError", "returned"),
                     "n_threads=1099511627776": ("ValueError", "returned")})


HUGE_ITERATIONS = INTERRUPTIBLE_PROLOGUE + """
import threading
X = np.random.RandomState(0).uniform(-1, 1, (4, 3))
y = np.array([0.0, 1.0, 1.0, 0.0])
for backend in ("cython", "numpy"):
    net = nnfast.Network([3, 4, 1], backend=backend)
    timer = threading.Timer(1.0, signal.raise_signal, (signal.SIGINT,))  # Ctrl-C, portably
    timer.start()
    try:
        # A callback, as a user would give to stop such a fit, reports every 10**28 epochs.
        net.fit(X, y, iterations=10**30, callback=lambda i, e: True)
        print(f"{backend}: returned", flush=True)
    except KeyboardInterrupt:
        print(f"{backend}: trained until interrupted", flush=True)
    except ValueError as exc:
        print(f"{backend}: ValueError naming iterations: {'iterations' in str(exc)}", flush=True)
    except Exception as exc:
        print(f"{backend}: {type(exc).__name__}: {exc}", flush=True)
    finally:
        timer.cancel()
    try:
        time.sleep(0.2)  # an interrupt that came late lands here, not in the next fit
    except KeyboardInterrupt:
        pass
"""


def test_iteration_counts_beyond_the_kernels_index_type():
    """iterations passes validation with any int >= 0, and the NumPy backend trains with
    10**30 (until interrupted). The compiled backend must do the same, or refuse it up front
    with a ValueError; not fail with the OverflowError of a C ssize_t conversion."""
    returncode, stdout, stderr = _run_child(HUGE_ITERATIONS, timeout=60)
    assert returncode == 0, stderr
    allowed = {"trained until interrupted", "ValueError naming iterations: True"}
    for backend in BACKENDS:
        line = [line for line in stdout.splitlines() if line.startswith(f"{backend}: ")]
        assert line, stdout + stderr
        assert line[0].split(": ", 1)[1] in allowed, line[0]


# Network.load: kinds of hostile file tests/test_persistence.py does not have.

def _saved(tmp_path):
    path = tmp_path / "valid.npz"
    nnfast.Network([3, 4, 2], bias=True).save(path)
    return path


def _replace_member(source, target, name, data, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(source) as archive:
        members = {member: archive.read(member) for member in archive.namelist()}
    members[name] = data
    with zipfile.ZipFile(target, "w", compression=compress) as archive:
        for member, contents in members.items():
            archive.writestr(member, contents)


def _npy_header(shape, descr="<f8"):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False,
                                                  "shape": shape})
    return header.getvalue()


def test_load_refuses_an_entry_that_claims_a_huge_shape(tmp_path):
    """A 1 KB file whose 'params' entry declares 2**40 float64 values (8 TiB): a corrupt file,
    refused as such (ValueError naming the file), not a MemoryError from trying to allocate
    what the header claims. Run in a child under an address-space limit, so that a loader
    that does try cannot hurt the machine."""
    path = tmp_path / "huge_claim.npz"
    _replace_member(_saved(tmp_path), path, "params.npy", _npy_header((2**40,)) + bytes(64))
    returncode, stdout, stderr = _run_child(f"""
    limit_address_space()
    try:
        nnfast.Network.load({str(path)!r})
        print("loaded", flush=True)
    except ValueError as exc:
        print("ValueError naming the file:", {str(path)!r} in str(exc), flush=True)
    except Exception as exc:
        print(type(exc).__name__, flush=True)
    """)
    assert returncode == 0, stderr
    assert stdout.strip() == "ValueError naming the file: True", stdout + stderr


def test_load_refuses_a_moderate_false_claim_without_reading_it(tmp_path):
    """The same with a claim of 10**7 values (80 MB) over 64 bytes of data."""
    path = tmp_path / "false_claim.npz"
    _replace_member(_saved(tmp_path), path, "params.npy", _npy_header((10**7,)) + bytes(64))
    with pytest.raises(ValueError, match="false_claim.npz"):
        nnfast.Network.load(path)


def test_load_refuses_a_file_with_an_absurd_thread_count(tmp_path):
    """A file is input too: an n_threads no machine has must be refused on load (or capped),
    since a fit with it crashes the process (see test_absurd_thread_counts_...)."""
    valid = _saved(tmp_path)
    path = tmp_path / "threads.npz"
    with np.load(valid, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    entries["n_threads"] = np.array(100_000, dtype=np.int64)
    with open(path, "wb") as file:
        np.savez(file, **entries)
    try:
        net = nnfast.Network.load(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    assert net.n_threads is None or net.n_threads <= max(os.cpu_count() or 1, 64)


def test_load_reads_the_optional_iterations_run_entry(tmp_path):
    """The format documents an optional 'iterations_run' entry, written by save; load must
    read it back (and so can refuse a bad one, below)."""
    path = tmp_path / "trained.npz"
    net = nnfast.Network([3, 4, 2], bias=True).fit(np.zeros((5, 3)), np.zeros((5, 2)),
                                                   iterations=12)
    assert net.iterations_run == 12
    net.save(path)
    with np.load(path, allow_pickle=False) as npz:
        assert int(npz["iterations_run"]) == 12
    assert nnfast.Network.load(path).iterations_run == 12


@pytest.mark.parametrize("key, value, problem", [
    ("seed", np.array(-1, dtype=np.int64), "'seed'"),
    ("n_threads", np.array(0, dtype=np.int64), "'n_threads'"),
    ("random_state_has_gauss", np.array(2, dtype=np.int64), "'random_state_has_gauss'"),
    ("random_state_cached_gaussian", np.array(np.nan), "'random_state_cached_gaussian'"),
    ("history", np.array([[0.0, np.nan]]), "'history'"),
    ("history", np.array([[-1.0, 0.5]]), "'history'"),
    ("iterations_run", np.array(-5, dtype=np.int64), "'iterations_run'"),
    ("format", np.array(1), "'format'"),
    ("sizes", np.array([2**31 - 1, 2**31 - 1], dtype=np.int64), "'params' has shape"),
], ids=["negative-seed", "zero-threads", "has-gauss-2", "nan-gaussian", "nan-history",
        "negative-history-iteration", "negative-iterations-run", "format-not-a-string",
        "sizes-of-4.6e18-weights"])
def test_load_refuses_out_of_range_entries(tmp_path, key, value, problem):
    valid = _saved(tmp_path)
    path = tmp_path / f"bad_{key}.npz"
    with np.load(valid, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    entries[key] = value
    with open(path, "wb") as file:
        np.savez(file, **entries)
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        nnfast.Network.load(path)
    assert problem in str(info.value)


def test_load_of_a_compressed_file_works_and_a_damaged_one_is_refused(tmp_path):
    """np.savez_compressed writes deflated members: still a valid .npz the format allows;
    a flipped bit inside the compressed data is caught."""
    valid = _saved(tmp_path)
    path = tmp_path / "compressed.npz"
    with np.load(valid, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    with open(path, "wb") as file:
        np.savez_compressed(file, **entries)
    loaded = nnfast.Network.load(path)
    assert_array_equal(loaded.params, nnfast.Network.load(valid).params)
    contents = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("params.npy")
    assert info.compress_type == zipfile.ZIP_DEFLATED
    # The member's data follows its local header: 30 bytes, the name and an extra field.
    name_length, extra_length = struct.unpack_from("<HH", contents, info.header_offset + 26)
    data_start = info.header_offset + 30 + name_length + extra_length
    contents[data_start + info.compress_size // 2] ^= 0x40
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(contents))
    with pytest.raises(ValueError, match="damaged.npz"):
        nnfast.Network.load(damaged)


# --------------------------------------------------------------------------------------------
# (d) large and extreme values
# --------------------------------------------------------------------------------------------

def _tolerance(sizes, X, y, dtype, bias, kwargs, expected):
    """How far rounding alone can move this fit: 16 times the change a 1-ulp change of every
    initial weight makes to the reference's result, or 256 ulp of the largest weight."""
    net = nnfast.Network(sizes, seed=3, dtype=dtype, bias=bias, backend="numpy")
    signs = np.random.RandomState(0).choice([-1.0, 1.0], net.params.shape)
    net.params[...] = net.params * (1 + signs * np.finfo(dtype).eps)
    net.fit(X, y, **kwargs)
    sensitivity = _max_difference(net.params, expected)
    magnitude = max(1.0, float(np.abs(expected).max()))
    return max(16 * sensitivity, 256 * np.finfo(dtype).eps * magnitude)


def _fit_both(sizes, X, y, dtype, bias, kwargs, kernels):
    cy = nnfast.Network(sizes, seed=3, dtype=dtype, bias=bias)
    ref = nnfast.Network(sizes, seed=3, dtype=dtype, bias=bias, backend="numpy")
    errors = {}
    for name, net in (("cython", cy), ("numpy", ref)):
        history = []
        with kernel_build(kernels):
            net.fit(X, y, callback=lambda i, e: history.append(e), **kwargs)
        errors[name] = history
    return cy, ref, errors


def _check_agreement(sizes, X, y, dtype, bias, kwargs, kernels):
    cy, ref, errors = _fit_both(sizes, X, y, dtype, bias, kwargs, kernels)
    for name, net in (("cython", cy), ("numpy", ref)):
        assert np.isfinite(net.params).all(), name
        assert np.isfinite(errors[name]).all(), name
        assert np.isfinite(net.predict(X)).all(), name
    tolerance = _tolerance(sizes, X, y, dtype, bias, kwargs, ref.params)
    assert _max_difference(cy.params, ref.params) <= tolerance
    return cy, ref


@pytest.mark.parametrize("batch_size", [None, 7], ids=["full-batch", "mini-batch"])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_inputs_up_to_1e4_train_without_nan_and_match(batch_size, bias, dtype, kernels):
    rs = np.random.RandomState(1)
    X = rs.uniform(-1e4, 1e4, (40, 8)).astype(dtype)
    X[::5, 0] = 1e4
    X[1::5, 1] = -1e4
    y = (rs.random_sample((40, 3)) < 0.5).astype(dtype)
    kwargs = dict(iterations=20, learning_rate=0.1, batch_size=batch_size)
    _check_agreement([8, 16, 3], X, y, dtype, bias, kwargs, kernels)


def _extreme_inputs(dtype, rows=24):
    """One extreme value per row in column 0 (so no two overflow against each other), the
    other columns in [-1, 1]: the largest finite numbers, the smallest normal and subnormal
    ones, zero."""
    info = np.finfo(dtype)
    subnormal = np.nextafter(dtype(0), dtype(1))
    extremes = np.array([info.max, -info.max, info.tiny, -info.tiny, subnormal, -subnormal,
                         0.0, info.max / 2, -info.max / 3, 1e4, -1e4, 1.0], dtype=dtype)
    rs = np.random.RandomState(2)
    X = rs.uniform(-1, 1, (rows, 3)).astype(dtype)
    X[:, 0] = np.resize(extremes, rows)
    y = (rs.random_sample((rows, 2)) < 0.5).astype(dtype)
    return X, y


@pytest.mark.parametrize("batch_size", [None, 5], ids=["full-batch", "mini-batch"])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_extreme_float_inputs_train_without_nan_and_match(batch_size, bias, dtype, kernels):
    X, y = _extreme_inputs(dtype)
    kwargs = dict(iterations=20, learning_rate=0.5, batch_size=batch_size)
    cy, ref = _check_agreement([3, 4, 2], X, y, dtype, bias, kwargs, kernels)
    with kernel_build(kernels):
        gradient_w, _ = cy.gradient(X, y)
    assert all(np.isfinite(g).all() for g in gradient_w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_inputs_raise_no_floating_point_warnings(backend, dtype):
    """exp overflowing for a large pre-activation gives the exact sigmoid 0; predict says
    so and stays silent. So must fit and gradient, on both backends."""
    X, y = _extreme_inputs(dtype)
    net = nnfast.Network([3, 4, 2], dtype=dtype, backend=backend, bias=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.predict(X)
        net.gradient(X, y)
        net.fit(X, y, iterations=3, learning_rate=0.5)
