"""Input validation and coercion, done once at the API's edge.

Every public entry point passes its arguments through these functions; the kernel then
assumes valid, C-contiguous input of the network's dtype. Each failure is a ``TypeError``
(wrong kind of thing) or ``ValueError`` (right kind, bad value) whose message names the
argument and the problem.
"""

import math
import numbers
import os

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
BACKENDS = ("cython", "numpy")
# BLAS takes 32-bit dimensions; a larger layer or batch is refused before anything is allocated.
MAX_DIMENSION = 2**31 - 1
# The kernel never uses more threads than cores; a larger request is a mistake, not a wish.
MAX_THREADS = 1024


def check_int(value, name, minimum=None):
    """value as a Python int; bools and floats (even 3.0) are refused."""
    # type() first: a plain int is the common case, and the ABC check below costs about a
    # microsecond, which a fit pays for every parameter.
    if type(value) is not int and (isinstance(value, (bool, np.bool_))
                                   or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value



def check_bool(value, name):
    """value as a bool: True or False (Python's or NumPy's), else a TypeError naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)

def check_finite_real(value, name):
    """value as a Python float; must be a finite real number."""
    if type(value) is not float and (isinstance(value, (bool, np.bool_))
                                     or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_sizes(sizes):
    """Layer widths as a tuple of ints: at least two, each >= 1."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"sizes must be a sequence of layer widths, got {type(sizes).__name__}")
    sizes = tuple(check_int(width, f"sizes[{k}]", minimum=1) for k, width in enumerate(sizes))
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least two layers (input and output), got {sizes}")
    for k, width in enumerate(sizes):
        if width > MAX_DIMENSION:
            raise ValueError(f"sizes[{k}] = {width} exceeds the largest supported width "
                             f"{MAX_DIMENSION}")
    return sizes


def check_dtype(dtype):
    """The network's floating dtype: float32 or float64."""
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def check_backend(backend):
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, one of {BACKENDS}, got {backend!r}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    return backend


def available_cores():
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_n_threads(n_threads):
    """Threads to use: None means all cores, or OMP_NUM_THREADS when that is set."""
    if n_threads is None:
        try:
            from_environment = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
        except ValueError:
            from_environment = 0
        return from_environment if from_environment >= 1 else available_cores()
    n_threads = check_int(n_threads, "n_threads", minimum=1)
    if n_threads > MAX_THREADS:
        raise ValueError(f"n_threads={n_threads} is more than the supported {MAX_THREADS}")
    return n_threads


def _as_array(data, name):
    """np.asarray, with NumPy's error for ragged nested sequences restated for the caller."""
    try:
        return np.asarray(data)
    except ValueError as exc:
        raise TypeError(f"{name} must be a rectangular numeric array; could not make an "
                        f"array of it ({exc})") from None


def as_matrix(data, name, dtype):
    """A 2-D (or 1-D, for targets) array as a finite, C-contiguous 2-D array of dtype.

    Always copies or views read-only; the caller's array is never written to.
    """
    array = _as_array(data, name)
    if array.dtype == object:
        raise TypeError(f"{name} must be numeric, got an array of Python objects "
                        "(ragged rows or non-numbers?)")
    # dtype.kind rather than np.issubdtype: this runs on every fit and predict.
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integers or floats, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x features), got shape {array.shape}")
    if array.shape[0] < 1:
        raise ValueError(f"{name} must have at least one row, got shape {array.shape}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {array.shape}")
    for axis, length in enumerate(array.shape):
        if length > MAX_DIMENSION:
            raise ValueError(f"{name} has {length} entries along axis {axis}, more than the "
                             f"supported {MAX_DIMENSION}")
    if array.dtype.itemsize > np.dtype(dtype).itemsize:
        # Narrowing (float64 to float32) may overflow; that is checked just below.
        with np.errstate(over="ignore"):
            converted = np.ascontiguousarray(array, dtype=dtype)
    else:
        converted = np.ascontiguousarray(array, dtype=dtype)
    # One pass over the converted data; the input is looked at again only to say what is wrong.
    if not np.isfinite(converted).all():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        raise ValueError(f"{name} has values too large for {np.dtype(dtype)}")
    return converted


def check_inputs(X, sizes, dtype):
    """X for a network of these sizes: (n_rows, sizes[0]), finite, C-contiguous, dtype."""
    return check_input_width(as_matrix(X, "X", dtype), sizes)


def check_input_width(X, sizes):
    """X (dense or sparse) itself, when it has as many columns as the input layer has units."""
    if X.shape[1] != sizes[0]:
        raise ValueError(f"X has {X.shape[1]} columns but the network's input layer has "
                         f"{sizes[0]} units")
    return X


def check_targets(y, n_rows, sizes, dtype):
    """y as (n_rows, sizes[-1]); a 1-D y is one column."""
    array = _as_array(y, "y")
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    y = as_matrix(array, "y", dtype)
    if y.shape[0] != n_rows:
        raise ValueError(f"X has {n_rows} rows but y has {y.shape[0]}")
    if y.shape[1] != sizes[-1]:
        raise ValueError(f"y has {y.shape[1]} columns but the network's output layer has "
                         f"{sizes[-1]} units")
    return y


def check_learning_rate(learning_rate, dtype):
    """A finite learning rate that the network's dtype can hold without becoming 0 or inf."""
    learning_rate = check_finite_real(learning_rate, "learning_rate")
    limits = np.finfo(dtype)
    # Plain comparisons rather than a cast under np.errstate, which costs more than a short fit.
    if abs(learning_rate) > float(limits.max):
        raise ValueError(f"learning_rate={learning_rate} overflows {np.dtype(dtype)}")
    if learning_rate != 0 and abs(learning_rate) < float(limits.smallest_subnormal) / 2:
        raise ValueError(f"learning_rate={learning_rate} underflows to 0 in {np.dtype(dtype)}")
    return learning_rate


def physical_memory():
    """Bytes of RAM on this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(n_bytes, what):
    """MemoryError, before anything is allocated, for buffers larger than the machine's RAM
    (numpy would try, and the machine would swap or kill the process instead of failing)."""
    total = physical_memory()
    if total is not None and n_bytes > total:
        raise MemoryError(f"{what} needs {n_bytes / 2**30:.1f} GiB, more than this machine's "
                          f"{total / 2**30:.1f} GiB of memory")


# ---------------------------------------------------------------------------- model options

def check_activations(activation, n_hidden, names):
    """A tuple of one activation name per hidden layer, from one name or a sequence of them."""
    if isinstance(activation, str):
        if activation not in names:
            raise ValueError(f"unknown activation {activation!r}; choose one of {names}")
        return (activation,) * n_hidden
    if isinstance(activation, bytes) or not hasattr(activation, "__len__"):
        raise TypeError(f"activation must be a name or a sequence of names (one per hidden "
                        f"layer), got {type(activation).__name__} {activation!r}")
    activation = tuple(activation)
    if len(activation) != n_hidden:
        raise ValueError(f"activation has {len(activation)} names but the network has "
                         f"{n_hidden} hidden layers; give one name per hidden layer, or one "
                         "name for all")
    for k, name in enumerate(activation):
        if not isinstance(name, str):
            raise TypeError(f"activation[{k}] must be a string, got {type(name).__name__} "
                            f"{name!r}")
        if name not in names:
            raise ValueError(f"unknown activation[{k}] {name!r}; choose one of {names}")
    return tuple(str(name) for name in activation)  # plain str, not numpy.str_


def check_dropout(dropout, n_hidden):
    """A tuple of one dropout rate in [0, 1) per hidden layer, from one rate or a sequence of
    them (a network without hidden layers takes only 0)."""
    if isinstance(dropout, (str, bytes)) or not (hasattr(dropout, "__len__")
                                                 or isinstance(dropout, numbers.Real)):
        raise TypeError(f"dropout must be a rate or a sequence of rates (one per hidden "
                        f"layer), got {type(dropout).__name__} {dropout!r}")
    rates = (dropout,) * n_hidden if isinstance(dropout, numbers.Real) else tuple(dropout)
    if len(rates) != n_hidden:
        raise ValueError(f"dropout has {len(rates)} rates but the network has {n_hidden} "
                         "hidden layers; give one rate per hidden layer, or one for all")
    checked = []
    for k, rate in enumerate(rates):
        where = "dropout" if isinstance(dropout, numbers.Real) else f"dropout[{k}]"
        if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real):
            raise TypeError(f"{where} must be a real number, got {type(rate).__name__} "
                            f"{rate!r}")
        if not 0 <= rate < 1:
            raise ValueError(f"{where} must be in [0, 1), got {rate}")
        checked.append(float(rate))
    if isinstance(dropout, numbers.Real) and n_hidden == 0 and dropout != 0:
        raise ValueError(f"dropout={dropout} needs a hidden layer; this network has none")
    return tuple(checked)


def check_choice(value, name, choices):
    """value, a string among choices."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {choices}, got "
                        f"{type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {choices}")
    return value


def check_alpha(alpha):
    """The L2 penalty: a finite float >= 0."""
    alpha = check_finite_real(alpha, "alpha")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    return alpha


def check_loss_options(loss, huber_delta, quantile, output, losses):
    """A network's regression loss (None, or one of ``losses`` for the identity output) and
    its parameters: Huber's delta, a finite float > 0; the quantile, a float in (0, 1)."""
    if loss is not None:
        loss = check_choice(loss, "loss", losses)
        if output != "identity":
            raise ValueError(f"loss {loss!r} needs output='identity', got output={output!r} "
                             "(the other outputs have their own loss)")
    huber_delta = check_finite_real(huber_delta, "huber_delta")
    if huber_delta <= 0:
        raise ValueError(f"huber_delta must be > 0, got {huber_delta}")
    quantile = check_finite_real(quantile, "quantile")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    return loss, huber_delta, quantile


def check_sample_weight(sample_weight, n_rows, dtype):
    """Sample weights as a fresh C-contiguous (n_rows,) array of dtype: finite, >= 0, and
    not all zero (a weighted mean over no weight is undefined)."""
    array = _as_array(sample_weight, "sample_weight")
    if array.dtype == object or array.dtype.kind not in "iuf":
        raise TypeError(f"sample_weight must hold integers or floats, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D (one weight per row), got shape "
                         f"{array.shape}")
    if array.shape[0] != n_rows:
        raise ValueError(f"X has {n_rows} rows but sample_weight has {array.shape[0]}")
    with np.errstate(over="ignore"):
        converted = np.array(array, dtype=dtype, order="C")
    if not np.isfinite(converted).all():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError("sample_weight contains NaN or infinite values")
        raise ValueError(f"sample_weight has values too large for {np.dtype(dtype)}")
    if (converted < 0).any():
        raise ValueError("sample_weight must be >= 0; got negative weights")
    if not (converted > 0).any():
        raise ValueError("sample_weight must not be all zero")
    return converted


def check_target_range(y, output):
    """Targets the output's loss is defined for: probabilities for "logistic" and "softmax"
    (softmax rows summing to 1), non-negative counts for "exp"; others take any y."""
    if output in ("logistic", "softmax"):
        if (y < 0).any() or (y > 1).any():
            raise ValueError(f"output {output!r} needs targets in [0, 1] (probabilities or "
                             f"0/1 labels); y has values in [{y.min()}, {y.max()}]")
        if output == "softmax":
            tolerance = np.sqrt(np.finfo(y.dtype).eps) * y.shape[1]
            sums = y.sum(axis=1)
            bad = np.flatnonzero(np.abs(sums - 1) > tolerance)
            if bad.size:
                raise ValueError(f"output 'softmax' needs each row of y to sum to 1 (one-hot "
                                 f"or class probabilities); row {bad[0]} sums to "
                                 f"{sums[bad[0]]}")
    elif output == "exp" and (y < 0).any():
        raise ValueError(f"output 'exp' (Poisson loss) needs targets >= 0; y has a minimum of "
                         f"{y.min()}")
    return y
