"""Saving and loading a ``Network``: a documented ``.npz`` file, written atomically.

File format (version 1)
-----------------------
An uncompressed NumPy ``.npz`` archive (a zip of ``.npy`` files, as written by
``numpy.savez``) of plain arrays only, so that ``numpy.load(path, allow_pickle=False)`` reads
it and no Python object is ever unpickled. Scalars are 0-d arrays. Entries:

``format`` : str
    ``"nnfast-model"``: marks the file as an nnfast model.
``format_version`` : int64
    ``1``: this layout (``2``: below).
``sizes`` : int64, shape (n_layers,)
    Layer widths, input first.
``dtype`` : str
    ``"float32"`` or ``"float64"``: the network's floating dtype.
``bias`` : bool
    Whether every layer has a bias.
``backend`` : str
    ``"cython"`` or ``"numpy"``.
``seed`` : int64
    The seed the network was built with (informative: the state below is what counts).
``n_threads`` : int64
    Kernel threads; ``-1`` for None (all cores).
``params`` : float32 or float64 (as ``dtype``), shape (param_count,)
    All weights and biases back to back in the order W0, b0, W1, b1, ... (b only with
    ``bias``); Wk is ``(sizes[k], sizes[k+1])`` in row-major order, bk is ``(sizes[k+1],)``.
    See ``nnfast._training.layout``.
``random_state_key`` : uint32, shape (624,)
``random_state_pos`` : int64
``random_state_has_gauss`` : int64, 0 or 1
``random_state_cached_gaussian`` : float64
    The MT19937 state of the network's ``numpy.random.RandomState``, as its
    ``get_state()`` gives it; it draws the row order of shuffled mini-batches.
``history`` : float64, shape (k, 2)
    (iteration, error) at each report of the last fit that reported.
``iterations_run`` : int64, optional (0 when absent)
    Iterations the last fit ran.

File format (version 2)
-----------------------
Every entry of version 1, with ``format_version`` 2, plus the model options and the optimizer
(a version-1 reader refuses the file: it would read it as the original's sigmoid network):

``activations`` : str, shape (len(sizes) - 2,)
    The hidden activation of each hidden layer (``"identity"``, ``"logistic"``, ``"tanh"``,
    ``"relu"``).
``output`` : str
    ``"original"``, ``"identity"``, ``"logistic"``, ``"softmax"`` or ``"exp"``.
``reduction`` : str
    ``"sum"`` or ``"mean"``.
``alpha`` : float64
``optimizer`` : str
    ``"plain"`` (GradientStep), ``"sgd"`` (SGD) or ``"adam"`` (Adam).
``optimizer_<field>`` : one per field of that optimizer's dataclass
    (``nnfast.optimizers``): float64 for numbers, bool for ``nesterov``, str for
    ``schedule``; e.g. ``optimizer_learning_rate``, ``optimizer_momentum``.
``has_optimizer_state`` : bool
``optimizer_state_values`` : float32 or float64 (as ``dtype``), shape (state size,)
    SGD: the velocities; Adam: the first then the second moments; each block in the params
    layout (``nnfast._training.layout.optimizer_state_size``). Empty without a state.
``optimizer_state_step``, ``optimizer_state_samples_seen`` : int64
``optimizer_state_learning_rate`` : float64
    The counters of ``nnfast._training.plan.OptimizerState``.

File format (version 3)
-----------------------
Every entry of version 2, with ``format_version`` 3, plus (a version-2 reader refuses the
file: it would train it with squared error, a constant rate and no clipping):

``loss`` : str
    ``"output"`` (the output's own loss), ``"absolute_error"``, ``"huber"`` or ``"quantile"``.
``huber_delta``, ``quantile`` : float64
    The parameters of the losses ``"huber"`` and ``"quantile"``.
``optimizer_<field>`` of the fields version 2 did not have: ``schedule`` (Adam's, str),
    ``epochs`` and ``warmup_epochs`` (int64), ``max_grad_norm`` (float64); a field whose
    value is None (``epochs``, ``max_grad_norm``) has no entry.
``optimizer_state_epochs`` : int64
    The ``"cosine"`` schedule's position (``OptimizerState.epochs``).
``dropout`` : float64, one rate per hidden layer; only when a rate is above 0 (no entry:
    no dropout).

A network that version 1 can represent (the original's model options and no optimizer state)
is written as version 1, and one that version 2 can represent (no regression loss, cosine
schedule or clipping) as version 2, so that older nnfast versions keep reading them.

Readers ignore entries they do not know, so optional entries can be added without a new
version; a change to the meaning of an existing entry needs a new ``format_version``.

A loaded network predicts bitwise identically to the saved one and, having the same random
state, goes on training identically, shuffled mini-batches included.
"""

import contextlib
import dataclasses
import math
import os
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from . import optimizers
from ._training.layout import optimizer_state_size, param_count
from ._training.plan import (
    HIDDEN_ACTIVATIONS,
    OPTIMIZERS,
    LOSSES,
    OUTPUTS,
    REDUCTIONS,
    OptimizerState,
    is_original_model,
)
from ._validation import MAX_THREADS, check_backend, check_sizes

FORMAT = "nnfast-model"
# The newest version this module writes and reads; it reads every older one too.
FORMAT_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)

_OPTIMIZER_CLASSES = {"plain": optimizers.GradientStep, "sgd": optimizers.SGD,
                      "adam": optimizers.Adam}

_MT19937_KEY_LENGTH = 624
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"

_OPTIONAL = ("iterations_run",)
_REQUIRED = ("format", "format_version", "sizes", "dtype", "bias", "backend", "seed",
             "n_threads", "params", "random_state_key", "random_state_pos",
             "random_state_has_gauss", "random_state_cached_gaussian", "history")
_REQUIRED_V2 = ("activations", "output", "reduction", "alpha", "optimizer",
                "has_optimizer_state", "optimizer_state_values", "optimizer_state_step",
                "optimizer_state_samples_seen", "optimizer_state_learning_rate")
_REQUIRED_V3 = ("loss", "huber_delta", "quantile", "optimizer_state_epochs")
_OPTIMIZER_FIELDS = tuple(sorted({"optimizer_" + field.name
                                  for cls in _OPTIMIZER_CLASSES.values()
                                  for field in dataclasses.fields(cls)}))
# The optimizer fields that version 3 added (the cosine schedule, clipping): absent from
# older files, which mean their defaults.
_V3_OPTIMIZER_FIELDS = {"plain": (), "sgd": ("epochs", "warmup_epochs", "max_grad_norm"),
                        "adam": ("schedule", "epochs", "warmup_epochs", "max_grad_norm")}
# Every entry a reader may look at (sizes are checked against claims before reading).
_KNOWN = _REQUIRED + _OPTIONAL + _REQUIRED_V2 + _REQUIRED_V3 + ("dropout",) + _OPTIMIZER_FIELDS

# What reading a damaged or foreign file can raise, from zipfile, zlib (a compressed member)
# and numpy's .npy parser. Anything else (MemoryError, KeyboardInterrupt) is not about the
# file's content and propagates.
_CORRUPT_FILE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
                        KeyError, struct.error, NotImplementedError, RuntimeError)


# ---------------------------------------------------------------------------------- saving

def save_network(net, path):
    """Writes ``net`` to ``path`` in the format above, atomically.

    The file is written to a temporary file in the target's directory, flushed to disk, then
    renamed over ``path``: a crash or an error mid-save leaves any existing file at ``path``
    untouched and no temporary file behind. ``path`` is used exactly as given (no ``.npz`` is
    appended). If ``path`` is a symbolic link, the file it points to is replaced.

    Parameters
    ----------
    net : Network
    path : str or os.PathLike
    """
    target = os.fsdecode(os.fspath(path))
    if os.path.islink(target):
        # Replace the file the link points to, not the link.
        target = os.path.realpath(target)
    entries = _entries(net)
    directory = os.path.dirname(os.path.abspath(target))
    fd, temp_path = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".",
                                     suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            _give_default_permissions(file.fileno(), target)
            # An open file object: numpy writes to it as is and appends no ".npz".
            np.savez(file, allow_pickle=False, **entries)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise
    _fsync_directory(directory)


def _entries(net):
    """The arrays the file holds for ``net``."""
    name, key, pos, has_gauss, cached_gaussian = net.random_state.get_state()
    if name != "MT19937":  # RandomState has only ever used MT19937
        raise ValueError(f"cannot save a random state of bit generator {name!r}")
    history = np.array([(float(i), float(e)) for i, e in net.history],
                       dtype=np.float64).reshape(-1, 2)
    version = 1 if _is_version_1(net) else 2 if _is_version_2(net) else FORMAT_VERSION
    entries = {
        "format": np.array(FORMAT),
        "format_version": np.array(version, dtype=np.int64),
        "sizes": np.array(net.sizes, dtype=np.int64),
        "dtype": np.array(np.dtype(net.dtype).name),
        "bias": np.array(bool(net.bias)),
        "backend": np.array(str(net.backend)),
        "seed": np.array(net.seed, dtype=np.int64),
        "n_threads": np.array(-1 if net.n_threads is None else net.n_threads, dtype=np.int64),
        "params": np.ascontiguousarray(net.params),
        "random_state_key": np.asarray(key, dtype=np.uint32),
        "random_state_pos": np.array(pos, dtype=np.int64),
        "random_state_has_gauss": np.array(has_gauss, dtype=np.int64),
        "random_state_cached_gaussian": np.array(cached_gaussian, dtype=np.float64),
        "history": history,
        "iterations_run": np.array(net.iterations_run, dtype=np.int64),
    }
    if version >= 2:
        entries.update(_model_entries(net, version))
    return entries


def _optimizer_kind(optimizer):
    return {optimizers.GradientStep: "plain", optimizers.SGD: "sgd",
            optimizers.Adam: "adam"}[type(optimizer)]


def _is_version_2(net):
    """Whether version 2 represents net: no regression loss, cosine schedule, clipping or
    dropout (every field version 3 added at its default)."""
    optimizer = net.optimizer
    defaults = {field.name: field.default for field in dataclasses.fields(optimizer)}
    return (net.loss is None and net.huber_delta == 1.0 and net.quantile == 0.5
            and not any(net.dropout)
            and getattr(optimizer, "schedule", "constant") != "cosine"
            and all(getattr(optimizer, name) == defaults[name]
                    for name in _V3_OPTIMIZER_FIELDS[_optimizer_kind(optimizer)])
            and (net.optimizer_state is None or net.optimizer_state.epochs == 0))


def _is_version_1(net):
    """Whether version 1 represents net: the original's model and no optimizer state."""
    return (is_original_model(net.activations, net.output, net.reduction, net.alpha)
            and type(net.optimizer) is optimizers.GradientStep
            and net.optimizer.learning_rate == 1.0 and net.optimizer_state is None)


def _model_entries(net, version):
    """The version-2 entries (model options, optimizer configuration and state), and
    version 3's."""
    kind = _optimizer_kind(net.optimizer)
    entries = {
        "activations": np.array(list(net.activations), dtype=str).reshape(-1),
        "output": np.array(net.output),
        "reduction": np.array(net.reduction),
        "alpha": np.array(net.alpha, dtype=np.float64),
        "optimizer": np.array(kind),
    }
    for field in dataclasses.fields(net.optimizer):
        value = getattr(net.optimizer, field.name)
        if field.name in _V3_OPTIMIZER_FIELDS[kind] and (version < 3 or value is None):
            continue
        entries["optimizer_" + field.name] = (
            np.array(value) if isinstance(value, (bool, str)) else
            np.array(value, dtype=np.int64) if isinstance(value, int) else
            np.array(value, dtype=np.float64))
    state = net.optimizer_state
    if version >= 3:
        entries.update({
            "loss": np.array("output" if net.loss is None else net.loss),
            "huber_delta": np.array(net.huber_delta, dtype=np.float64),
            "quantile": np.array(net.quantile, dtype=np.float64),
            "optimizer_state_epochs": np.array(0 if state is None else state.epochs,
                                               dtype=np.int64),
        })
        if any(net.dropout):
            entries["dropout"] = np.array(net.dropout, dtype=np.float64)
    entries.update({
        "has_optimizer_state": np.array(state is not None),
        "optimizer_state_values": (np.empty(0, dtype=net.dtype) if state is None
                                   else np.ascontiguousarray(state.values)),
        "optimizer_state_step": np.array(0 if state is None else state.step, dtype=np.int64),
        "optimizer_state_samples_seen": np.array(0 if state is None else state.samples_seen,
                                                 dtype=np.int64),
        "optimizer_state_learning_rate": np.array(0.0 if state is None else
                                                  state.learning_rate, dtype=np.float64),
    })
    return entries


def _give_default_permissions(fd, target):
    """mkstemp creates the file readable by its owner only; give the saved file the mode an
    ordinary ``open(target, "w")`` would: the existing file's, else 0o666 less the umask."""
    if not hasattr(os, "fchmod"):  # Windows: permissions are not POSIX modes
        return
    try:
        mode = os.stat(target).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    os.fchmod(fd, mode)


def _umask():
    # Reading the umask through os.umask means setting it briefly, which races with other
    # threads creating files; Linux shows it in /proc instead.
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    """Makes the rename durable too (POSIX); best effort, as not every system allows it."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------- loading

class _Refusal(Exception):
    """A problem with the file's content; load_network reports it as a ValueError."""


def load_network(cls, path):
    """Reads a network written by ``save_network``.

    Never unpickles anything. Every entry is checked before the network is built.

    Parameters
    ----------
    cls : type
        ``Network`` or a subclass; the result is built by ``cls.from_params`` (the file's
        parameters, no fresh draw) with what its last fit left (random state, history,
        iterations run, optimizer state).
    path : str or os.PathLike

    Returns
    -------
    Network

    Raises
    ------
    FileNotFoundError, PermissionError, IsADirectoryError
        When the file cannot be opened.
    ValueError
        When the file is not an nnfast model file, is truncated or corrupt, or its entries are
        missing or inconsistent. The message names the file and the problem.
    """
    name = os.fsdecode(os.fspath(path))
    try:
        with open(name, "rb") as file:
            arrays = _read_arrays(file)
        return _build(cls, arrays)
    except _Refusal as exc:
        raise ValueError(f"cannot load an nnfast model from '{name}': {exc}") from exc.__cause__


def _check_claimed_size(archive, key):
    """Refuses entry ``key`` if its .npy header claims more data than the member holds."""
    try:
        member = archive.getinfo(key + ".npy")
    except KeyError:
        return
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        header_length = stream.tell()
    claimed = math.prod(shape) * dtype.itemsize
    if dtype.hasobject:
        return  # refused as a pickled entry when read
    if claimed != member.file_size - header_length:
        raise _Refusal(f"entry {key!r} claims shape {shape} of {dtype} ({claimed} bytes) but "
                       f"holds {member.file_size - header_length} bytes")


def _read_arrays(file):
    """The entries of the npz in ``file``, as arrays (unknown entries are not read)."""
    head = file.read(len(_NPY_MAGIC))
    if not head:
        raise _Refusal("the file is empty")
    if head.startswith(_NPY_MAGIC):
        raise _Refusal("it is a single .npy array, not an .npz archive")
    if not head.startswith(_ZIP_MAGIC):
        raise _Refusal("it is not an .npz (zip) file")
    file.seek(0)
    try:
        # Every member's CRC, before anything is parsed: a truncated or corrupted file is
        # refused as such rather than read as wrong numbers.
        with zipfile.ZipFile(file) as archive:
            bad_member = archive.testzip()
            if bad_member is not None:
                raise _Refusal(f"the file is corrupt (checksum mismatch in {bad_member!r})")
            # A header may claim any shape; numpy would allocate it before noticing the data
            # is short. Each entry's claim is checked against its stored size first.
            for key in _KNOWN:
                _check_claimed_size(archive, key)
        file.seek(0)
        npz = np.load(file, allow_pickle=False)
    except _CORRUPT_FILE_ERRORS as exc:
        raise _Refusal(f"the file is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    with npz:
        if not isinstance(npz, np.lib.npyio.NpzFile):  # the magic was checked above
            raise _Refusal("it is not an .npz archive")
        present = set(npz.files)
        if "format" not in present:
            listed = ", ".join(sorted(present)[:10]) or "none"
            raise _Refusal(f"it is not an nnfast model file (no 'format' entry; entries: "
                           f"{listed})")
        arrays = {}
        for key in _KNOWN:
            if key not in present:
                continue
            try:
                arrays[key] = npz[key]
            except _CORRUPT_FILE_ERRORS as exc:
                if isinstance(exc, ValueError) and "allow_pickle" in str(exc):
                    raise _Refusal(f"entry {key!r} is an array of pickled Python objects, "
                                   "which nnfast never loads") from exc
                raise _Refusal(f"entry {key!r} cannot be read ({type(exc).__name__}: "
                               f"{exc})") from exc
    return arrays


def _build(cls, arrays):
    """The network the checked entries describe."""
    marker = _string(arrays, "format")
    if marker != FORMAT:
        raise _Refusal(f"it is not an nnfast model file (format {marker!r}, expected "
                       f"{FORMAT!r})")
    if "format_version" not in arrays:
        raise _Refusal("missing entries: format_version")
    # The version before the other entries: another version may have other entries.
    version = _integer(arrays, "format_version")
    if version not in _READABLE_VERSIONS:
        raise _Refusal(f"unsupported format_version {version} (this nnfast reads versions "
                       f"{', '.join(map(str, _READABLE_VERSIONS))})")
    missing = [key for key in _REQUIRED + (_REQUIRED_V2 if version >= 2 else ())
               + (_REQUIRED_V3 if version >= 3 else ())
               if key not in arrays]
    if missing:
        raise _Refusal(f"missing entries: {', '.join(missing)}")

    sizes_array = arrays["sizes"]
    if sizes_array.ndim != 1 or sizes_array.dtype.kind not in "iu":
        raise _Refusal(f"entry 'sizes' must be a 1-D integer array, got {_describe(sizes_array)}")
    try:
        sizes = check_sizes([int(width) for width in sizes_array])
    except (TypeError, ValueError) as exc:
        raise _Refusal(f"invalid sizes: {exc}") from exc

    dtype_name = _string(arrays, "dtype")
    if dtype_name not in ("float32", "float64"):
        raise _Refusal(f"entry 'dtype' must be 'float32' or 'float64', got {dtype_name!r}")
    dtype = np.dtype(dtype_name)

    bias = arrays["bias"]
    if bias.shape != () or bias.dtype != np.bool_:
        raise _Refusal(f"entry 'bias' must be a boolean scalar, got {_describe(bias)}")
    bias = bool(bias)

    try:
        backend = check_backend(_string(arrays, "backend"))
    except ValueError as exc:
        raise _Refusal(f"invalid backend: {exc}") from exc

    seed = _integer(arrays, "seed")
    if seed < 0:
        raise _Refusal(f"entry 'seed' must be >= 0, got {seed}")

    n_threads = _integer(arrays, "n_threads")
    if n_threads != -1 and not 1 <= n_threads <= MAX_THREADS:
        raise _Refusal(f"entry 'n_threads' must be -1 (all cores) or 1..{MAX_THREADS}, got "
                       f"{n_threads}")

    n_params = param_count(sizes, bias)
    params = _float_array(arrays, "params", dtype, (n_params,),
                          f"({n_params},) for sizes {list(sizes)} with bias={bias}")
    if not np.isfinite(params).all():
        raise _Refusal("entry 'params' contains NaN or infinite values")

    random_state = _random_state(arrays)

    history = _float_array(arrays, "history", np.dtype(np.float64), (None, 2), "(k, 2)")
    if not np.isfinite(history).all():
        raise _Refusal("entry 'history' contains NaN or infinite values")
    iterations = history[:, 0]
    if ((iterations < 0) | (iterations != np.floor(iterations))).any():
        raise _Refusal("entry 'history' has iteration numbers that are not whole numbers >= 0")

    iterations_run = _integer(arrays, "iterations_run") if "iterations_run" in arrays else 0
    if iterations_run < 0:
        raise _Refusal(f"entry 'iterations_run' must be >= 0, got {iterations_run}")

    if version >= 2:
        model = _model(arrays, sizes, dtype, n_params, version)
    else:  # a version-1 file is the original's model
        model = {"activations": ("logistic",) * (len(sizes) - 2), "output": "original",
                 "optimizer": optimizers.GradientStep(), "alpha": 0.0, "reduction": "sum",
                 "optimizer_state": None}
    losses = _losses(arrays) if version >= 3 else {}

    # The network's one construction from given parameters, then what a fit leaves.
    try:
        net = cls.from_params(params, sizes, seed=seed, dtype=dtype, backend=backend, bias=bias,
                              n_threads=None if n_threads == -1 else n_threads,
                              activation=model["activations"], output=model["output"],
                              optimizer=model["optimizer"], alpha=model["alpha"],
                              reduction=model["reduction"], **losses)
    except (TypeError, ValueError) as exc:
        raise _Refusal(f"its model options are not a network's: {exc}") from exc
    net.random_state = random_state
    net.history = [(int(i), float(e)) for i, e in history]
    net.iterations_run = iterations_run
    net.optimizer_state = model["optimizer_state"]
    return net


def _losses(arrays):
    """The regression loss options and dropout rates of a version-3 file (Network checks
    their values)."""
    loss = _choice(arrays, "loss", ("output",) + LOSSES)
    values = {}
    for key in ("huber_delta", "quantile"):
        value = arrays[key]
        if value.shape != () or value.dtype.kind != "f":
            raise _Refusal(f"entry {key!r} must be a float scalar, got {_describe(value)}")
        values[key] = float(value)
    if "dropout" in arrays:
        rates = arrays["dropout"]
        if rates.ndim != 1 or rates.dtype.kind != "f":
            raise _Refusal(f"entry 'dropout' must be a 1-D float array, got "
                           f"{_describe(rates)}")
        values["dropout"] = tuple(float(rate) for rate in rates)
    return {"loss": None if loss == "output" else loss, **values}


def _model(arrays, sizes, dtype, n_params, version):
    """The model options and optimizer of a version-2 (or 3) file, checked."""
    activations = arrays["activations"]
    if activations.ndim != 1 or (activations.size and activations.dtype.kind != "U"):
        raise _Refusal(f"entry 'activations' must be a 1-D array of strings, got "
                       f"{_describe(activations)}")
    activations = tuple(str(name) for name in activations)
    if len(activations) != len(sizes) - 2:
        raise _Refusal(f"entry 'activations' has {len(activations)} names for "
                       f"{len(sizes) - 2} hidden layers")
    for name in activations:
        if name not in HIDDEN_ACTIVATIONS:
            raise _Refusal(f"unknown activation {name!r} in entry 'activations'")
    output = _choice(arrays, "output", OUTPUTS)
    if output == "softmax" and sizes[-1] < 2:
        raise _Refusal("output 'softmax' with a single output unit")
    reduction = _choice(arrays, "reduction", REDUCTIONS)
    alpha = arrays["alpha"]
    if alpha.shape != () or alpha.dtype.kind != "f" or not np.isfinite(alpha) or alpha < 0:
        raise _Refusal(f"entry 'alpha' must be a finite float >= 0, got {alpha!r}")
    kind = _choice(arrays, "optimizer", OPTIMIZERS)
    optimizer = _optimizer(arrays, kind, version)

    has_state = arrays["has_optimizer_state"]
    if has_state.shape != () or has_state.dtype != np.bool_:
        raise _Refusal(f"entry 'has_optimizer_state' must be a boolean scalar, got "
                       f"{_describe(has_state)}")
    state = None
    if bool(has_state):
        size = optimizer_state_size(kind, n_params)
        values = _float_array(arrays, "optimizer_state_values", dtype, (size,),
                              f"({size},) for optimizer {kind!r} and {n_params} parameters")
        if not np.isfinite(values).all():
            raise _Refusal("entry 'optimizer_state_values' contains NaN or infinite values")
        step = _integer(arrays, "optimizer_state_step")
        samples_seen = _integer(arrays, "optimizer_state_samples_seen")
        if step < 0 or samples_seen < 0:
            raise _Refusal("entries 'optimizer_state_step' and 'optimizer_state_samples_seen' "
                           "must be >= 0")
        learning_rate = arrays["optimizer_state_learning_rate"]
        if (learning_rate.shape != () or learning_rate.dtype.kind != "f"
                or not np.isfinite(learning_rate)):
            raise _Refusal("entry 'optimizer_state_learning_rate' must be a finite float")
        epochs = _integer(arrays, "optimizer_state_epochs") if version >= 3 else 0
        if epochs < 0:
            raise _Refusal("entry 'optimizer_state_epochs' must be >= 0")
        state = OptimizerState(values, step, samples_seen, float(learning_rate), epochs)
    return {"activations": activations, "output": output, "optimizer": optimizer,
            "alpha": float(alpha), "reduction": reduction, "optimizer_state": state}


def _choice(arrays, key, choices):
    value = _string(arrays, key)
    if value not in choices:
        raise _Refusal(f"entry {key!r} must be one of {choices}, got {value!r}")
    return value


def _optimizer(arrays, kind, version):
    """The optimizer dataclass from its optimizer_<field> entries, validated by its own
    __post_init__."""
    cls = _OPTIMIZER_CLASSES[kind]
    fields = {}
    for field in dataclasses.fields(cls):
        key = "optimizer_" + field.name
        if field.name in _V3_OPTIMIZER_FIELDS[kind] and (version < 3 or key not in arrays):
            continue  # the field's default (None for an absent epochs or max_grad_norm)
        if key not in arrays:
            raise _Refusal(f"missing entries: {key}")
        value = arrays[key]
        if value.shape != () or value.dtype.kind not in "fbUi":
            raise _Refusal(f"entry {key!r} must be a scalar, got {_describe(value)}")
        fields[field.name] = value.item()
    try:
        return cls(**fields)
    except (TypeError, ValueError) as exc:
        raise _Refusal(f"invalid optimizer: {exc}") from exc


def _random_state(arrays):
    key = arrays["random_state_key"]
    if key.shape != (_MT19937_KEY_LENGTH,) or key.dtype.kind != "u" or key.dtype.itemsize != 4:
        raise _Refusal(f"entry 'random_state_key' must be uint32 of shape "
                       f"({_MT19937_KEY_LENGTH},), got {_describe(key)}")
    pos = _integer(arrays, "random_state_pos")
    if not 0 <= pos <= _MT19937_KEY_LENGTH:
        raise _Refusal(f"entry 'random_state_pos' must be in [0, {_MT19937_KEY_LENGTH}], "
                       f"got {pos}")
    has_gauss = _integer(arrays, "random_state_has_gauss")
    if has_gauss not in (0, 1):
        raise _Refusal(f"entry 'random_state_has_gauss' must be 0 or 1, got {has_gauss}")
    cached = arrays["random_state_cached_gaussian"]
    if cached.shape != () or cached.dtype.kind != "f":
        raise _Refusal("entry 'random_state_cached_gaussian' must be a float scalar, got "
                       f"{_describe(cached)}")
    cached = float(cached)
    if not np.isfinite(cached):
        raise _Refusal("entry 'random_state_cached_gaussian' is not finite")
    random_state = np.random.RandomState()
    random_state.set_state(("MT19937", key.astype(np.uint32), pos, has_gauss, cached))
    return random_state


def _float_array(arrays, key, dtype, shape, expected):
    """arrays[key] as a fresh, writable, C-contiguous array of dtype in native byte order;
    refused unless stored as that floating type (either byte order) with that shape (None:
    any length on that axis)."""
    array = arrays[key]
    if array.dtype.kind != "f" or array.dtype.itemsize != dtype.itemsize:
        raise _Refusal(f"entry {key!r} must be {dtype.name}, got dtype {array.dtype}")
    if array.ndim != len(shape) or any(want is not None and got != want
                                       for got, want in zip(array.shape, shape)):
        raise _Refusal(f"entry {key!r} has shape {array.shape}, expected {expected}")
    return np.array(array, dtype=dtype, order="C", copy=True)


def _string(arrays, key):
    value = arrays[key]
    if value.shape != () or value.dtype.kind != "U":
        raise _Refusal(f"entry {key!r} must be a string, got {_describe(value)}")
    return str(value)


def _integer(arrays, key):
    value = arrays[key]
    if value.shape != () or value.dtype.kind not in "iu":
        raise _Refusal(f"entry {key!r} must be an integer scalar, got {_describe(value)}")
    return int(value)


def _describe(array):
    return f"an array of dtype {array.dtype} and shape {array.shape}"
