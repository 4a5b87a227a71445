"""Network.save / Network.load (nnfast._persistence), pickle and copy.deepcopy; file format
versions 1 (the original's model) and 2 (model options and optimizer state).

A reloaded or copied network must be the same network: bitwise the same parameters and
predictions, and the same random state, so that training it further (shuffled mini-batches
included) gives bitwise the same result as training the original further. Loading refuses
anything that is not such a file with a ValueError naming the file.
"""

import copy
import io
import os
import pathlib
import pickle
import re
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import nnfast
from nnfast.optimizers import SGD, Adam, GradientStep

DOCUMENTED_KEYS = {
    "format", "format_version", "sizes", "dtype", "bias", "backend", "seed", "n_threads",
    "params", "random_state_key", "random_state_pos", "random_state_has_gauss",
    "random_state_cached_gaussian", "history", "iterations_run",
}
DOCUMENTED_KEYS_V2 = DOCUMENTED_KEYS | {
    "activations", "output", "reduction", "alpha", "optimizer", "has_optimizer_state",
    "optimizer_state_values", "optimizer_state_step", "optimizer_state_samples_seen",
    "optimizer_state_learning_rate",
}
# The optimizer fields that format version 3 added (the cosine schedule, clipping).
V3_OPTIMIZER_FIELDS = {"GradientStep": set(),
                       "SGD": {"epochs", "warmup_epochs", "max_grad_norm"},
                       "Adam": {"schedule", "epochs", "warmup_epochs", "max_grad_norm"}}
BACKENDS = ["cython", "numpy"]
# A version-1 file written by nnfast before format version 2 existed (by the writer of commit
# 7334a91): Network([3, 4, 2], seed=7, backend="numpy", bias=True) after _trained's fit.
V1_FIXTURE = pathlib.Path(__file__).parent / "data" / "network_v1.npz"
# Continued training: mini-batches of 3 out of 10 rows, so the shuffled order matters.
BATCH_SIZE = 3


@pytest.fixture
def data():
    rng = np.random.RandomState(0)
    X = rng.random_sample((10, 3))
    y = (rng.random_sample((10, 2)) > 0.5).astype(np.float64)
    return X, y


def _trained(data, dtype=np.float64, backend="cython", bias=True, n_threads=None):
    """A network some way into training, with a non-empty history and a used random state."""
    X, y = data
    net = nnfast.Network([3, 4, 2], seed=7, dtype=dtype, backend=backend, bias=bias,
                         n_threads=n_threads)
    return net.fit(X, y, iterations=12, learning_rate=0.5, batch_size=BATCH_SIZE,
                   callback=lambda i, e: False)


def _train_more(net, data):
    X, y = data
    return net.fit(X, y, iterations=25, learning_rate=0.5, batch_size=BATCH_SIZE, shuffle=True)


def _assert_same_network(a, b):
    """Same configuration, bitwise the same parameters and random state."""
    assert type(a) is type(b)
    assert a.sizes == b.sizes
    assert a.seed == b.seed
    assert a.dtype == b.dtype
    assert a.backend == b.backend
    assert a.bias == b.bias
    assert a.n_threads == b.n_threads
    assert a.history == b.history
    assert a.params.dtype == b.params.dtype
    assert_array_equal(a.params, b.params)
    state_a, state_b = a.random_state.get_state(), b.random_state.get_state()
    assert state_a[0] == state_b[0]
    assert_array_equal(state_a[1], state_b[1])
    assert state_a[2:] == state_b[2:]


def _assert_trains_like(original, twin, data):
    """original and twin go on training bitwise identically, and would not have done so
    with another random state (so the comparison does test the saved state)."""
    X, _ = data
    assert_array_equal(twin.predict(X), original.predict(X))
    reseeded = copy.deepcopy(twin)
    reseeded.random_state = np.random.RandomState(12345)
    expected = _train_more(original, data).params
    assert_array_equal(_train_more(twin, data).params, expected)
    assert not np.array_equal(_train_more(reseeded, data).params, expected)
    assert_array_equal(twin.predict(X), original.predict(X))


def _valid_file(tmp_path, data, name="valid.npz", **kwargs):
    path = tmp_path / name
    _trained(data, **kwargs).save(path)
    return path


def _entries(path):
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _rewrite(source, target, **changes):
    """Writes target as source's entries with changes applied (None removes an entry)."""
    entries = _entries(source)
    for key, value in changes.items():
        if value is None:
            del entries[key]
        else:
            entries[key] = value
    with open(target, "wb") as file:
        np.savez(file, **entries)


# ----------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_save_load_round_trip(tmp_path, data, dtype, backend, bias):
    net = _trained(data, dtype=dtype, backend=backend, bias=bias)
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = nnfast.Network.load(path)
    _assert_same_network(loaded, net)
    assert loaded.history and all(type(i) is int and type(e) is float
                                  for i, e in loaded.history)
    assert loaded.params.flags.c_contiguous and loaded.params.flags.writeable
    _assert_trains_like(net, loaded, data)


def test_loaded_network_has_every_attribute_init_sets(tmp_path, data):
    path = _valid_file(tmp_path, data)
    loaded = nnfast.Network.load(path)
    fresh = nnfast.Network([3, 4, 2], seed=7, bias=True)
    missing = set(vars(fresh)) - set(vars(loaded))
    assert not missing
    for name, value in vars(fresh).items():
        assert type(getattr(loaded, name)) is type(value), name


def test_untrained_network_round_trips(tmp_path, data):
    net = nnfast.Network([3, 1], seed=3, dtype=np.float32)
    net.save(tmp_path / "m.npz")
    loaded = nnfast.Network.load(tmp_path / "m.npz")
    _assert_same_network(loaded, net)
    assert loaded.history == []
    X, _ = data
    assert_array_equal(loaded.predict(X), net.predict(X))


@pytest.mark.parametrize("n_threads", [None, 1, 3])
def test_n_threads_round_trips(tmp_path, data, n_threads):
    path = _valid_file(tmp_path, data, n_threads=n_threads)
    assert int(_entries(path)["n_threads"]) == (-1 if n_threads is None else n_threads)
    assert nnfast.Network.load(path).n_threads == n_threads


def test_subclass_loads_as_subclass(tmp_path, data):
    class MyNetwork(nnfast.Network):
        pass

    path = _valid_file(tmp_path, data)
    assert type(MyNetwork.load(path)) is MyNetwork


def test_file_is_a_plain_documented_npz(tmp_path, data, dtype):
    net = _trained(data, dtype=dtype)
    path = tmp_path / "model.npz"
    net.save(path)
    assert zipfile.is_zipfile(path)
    entries = _entries(path)  # allow_pickle=False: would raise on any object array
    assert set(entries) == DOCUMENTED_KEYS
    assert not any(array.dtype.hasobject for array in entries.values())
    assert str(entries["format"]) == "nnfast-model"
    assert entries["format_version"].shape == () and int(entries["format_version"]) == 1
    assert entries["sizes"].dtype == np.int64
    assert_array_equal(entries["sizes"], [3, 4, 2])
    assert str(entries["dtype"]) == np.dtype(dtype).name
    assert entries["bias"].dtype == np.bool_ and bool(entries["bias"]) is True
    assert str(entries["backend"]) == "cython"
    assert int(entries["seed"]) == 7
    assert entries["params"].dtype == np.dtype(dtype)
    assert_array_equal(entries["params"], net.params)
    # The documented layout: W0, b0, W1, b1 back to back, each W row-major.
    weights, biases = net.weights, net.biases
    assert_array_equal(entries["params"], np.concatenate(
        [weights[0].ravel(), biases[0], weights[1].ravel(), biases[1]]))
    name, key, pos, has_gauss, cached = net.random_state.get_state()
    assert entries["random_state_key"].dtype == np.uint32
    assert_array_equal(entries["random_state_key"], key)
    assert int(entries["random_state_pos"]) == pos
    assert int(entries["random_state_has_gauss"]) == has_gauss
    assert float(entries["random_state_cached_gaussian"]) == cached
    assert entries["history"].dtype == np.float64
    assert entries["history"].shape == (len(net.history), 2)
    assert_array_equal(entries["history"], np.array(net.history, dtype=np.float64))


def test_random_state_with_cached_gaussian_round_trips(tmp_path, data):
    net = _trained(data)
    net.random_state.standard_normal()  # leaves has_gauss = 1 and a cached value
    assert net.random_state.get_state()[3] == 1
    net.save(tmp_path / "m.npz")
    loaded = nnfast.Network.load(tmp_path / "m.npz")
    _assert_same_network(loaded, net)
    assert loaded.random_state.standard_normal() == net.random_state.standard_normal()


def test_path_is_used_exactly_as_given(tmp_path, data):
    net = _trained(data)
    for path in [tmp_path / "model.bin", str(tmp_path / "plain"), tmp_path / "m.npz"]:
        net.save(path)
        assert os.path.isfile(path)
        _assert_same_network(nnfast.Network.load(str(path)), net)
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "model.bin", "plain"]


def test_save_replaces_an_existing_file(tmp_path, data):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old contents")
    net = _trained(data)
    net.save(path)
    _assert_same_network(nnfast.Network.load(path), net)
    assert os.listdir(tmp_path) == ["model.npz"]


def test_save_through_a_symlink_replaces_its_target(tmp_path, data):
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    net = _trained(data)
    net.save(link)
    assert link.is_symlink()
    _assert_same_network(nnfast.Network.load(target), net)


def test_saved_file_gets_ordinary_permissions(tmp_path, data):
    mask = os.umask(0o022)
    os.umask(mask)
    new = _valid_file(tmp_path, data, name="new.npz")
    assert new.stat().st_mode & 0o777 == 0o666 & ~mask
    existing = tmp_path / "existing.npz"
    existing.write_bytes(b"old")
    existing.chmod(0o640)
    _trained(data).save(existing)
    assert existing.stat().st_mode & 0o777 == 0o640


# ------------------------------------------------------------------------------ atomicity

class _Boom(Exception):
    pass


def _partial_savez(file, *args, **kwargs):
    file.write(b"PK\x03\x04 half a zip")
    raise _Boom("disk full")


def _failing(*args, **kwargs):
    raise _Boom("failure")


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("where, replacement, error", [
    ("savez", _partial_savez, _Boom),
    ("savez", _interrupted, KeyboardInterrupt),
    ("fsync", _failing, _Boom),
    ("replace", _failing, _Boom),
])
@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
def test_failed_save_leaves_previous_file_and_no_temp_file(tmp_path, data, monkeypatch,
                                                           where, replacement, error, existing):
    path = tmp_path / "model.npz"
    if existing:
        nnfast.Network([3, 2], seed=1).save(path)
        before = path.read_bytes()
    net = _trained(data)
    module = np if where == "savez" else os
    monkeypatch.setattr(module, where, replacement)
    with pytest.raises(error):
        net.save(path)
    monkeypatch.undo()
    if existing:
        assert path.read_bytes() == before
        assert os.listdir(tmp_path) == ["model.npz"]
    else:
        assert os.listdir(tmp_path) == []


def test_failed_save_did_reach_the_patched_step(tmp_path, data, monkeypatch):
    """The atomicity test patches functions save really calls: os.replace onto the target."""
    calls = []
    real_replace = os.replace

    def spy(source, target):
        calls.append((os.path.dirname(source), target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "model.npz"
    _trained(data).save(path)
    assert calls == [(str(tmp_path), str(path))]


# ---------------------------------------------------------------------------- bad files

def _write(path, contents):
    path.write_bytes(contents)


def _truncated(valid, path):
    contents = valid.read_bytes()
    _write(path, contents[:len(contents) // 2])


def _bit_flipped(valid, path):
    contents = bytearray(valid.read_bytes())
    contents[len(contents) // 2] ^= 0x10
    _write(path, bytes(contents))


def _foreign_npz(valid, path):
    rng = np.random.RandomState(0)
    with open(path, "wb") as file:
        np.savez(file, rng.random_sample(5), weights=rng.random_sample((3, 4)))


def _npy(valid, path):
    with open(path, "wb") as file:
        np.save(file, np.arange(5.0))


def _changed(**changes):
    def make(valid, path):
        _rewrite(valid, path, **changes)
    return make


def _object_array(key):
    def make(valid, path):
        _rewrite(valid, path, **{key: np.array([{"a": 1}], dtype=object)})
    return make


HOSTILE = {
    "truncated": (_truncated, "truncated or corrupt"),
    "bit_flipped": (_bit_flipped, "corrupt"),
    "empty": (lambda valid, path: _write(path, b""), "empty"),
    "text": (lambda valid, path: _write(path, b"weights: 1 2 3\n"), "not an .npz"),
    "npy": (_npy, "not an .npz"),
    "foreign_npz": (_foreign_npz, "not an nnfast model"),
    "wrong_marker": (_changed(format=np.array("other-model")), "not an nnfast model"),
    "wrong_version": (_changed(format_version=np.array(4)), "format_version 4"),
    "version_2_without_its_entries": (_changed(format_version=np.array(2)),
                                      "missing entries: activations"),
    "missing_entry": (_changed(random_state_key=None), "missing entries: random_state_key"),
    "params_length": (_changed(params=np.zeros(5)), "'params' has shape"),
    "params_int": (_changed(params=np.zeros(26, dtype=np.int64)), "'params' must be float64"),
    "params_float32": (_changed(params=np.zeros(26, dtype=np.float32)),
                       "'params' must be float64"),
    "params_nan": (_changed(params=np.full(26, np.nan)), "NaN or infinite"),
    "sizes_zero": (_changed(sizes=np.array([3, 0, 2])), "invalid sizes"),
    "sizes_one_layer": (_changed(sizes=np.array([3])), "invalid sizes"),
    "sizes_float": (_changed(sizes=np.array([3.0, 4.0, 2.0])), "'sizes' must be"),
    "dtype_float16": (_changed(dtype=np.array("float16")), "'dtype' must be"),
    "backend_unknown": (_changed(backend=np.array("cuda")), "invalid backend"),
    "bias_int": (_changed(bias=np.array(1)), "'bias' must be"),
    "key_shape": (_changed(random_state_key=np.zeros(623, dtype=np.uint32)),
                  "'random_state_key'"),
    "key_dtype": (_changed(random_state_key=np.zeros(624, dtype=np.int64)),
                  "'random_state_key'"),
    "pos_out_of_range": (_changed(random_state_pos=np.array(625)), "'random_state_pos'"),
    "history_shape": (_changed(history=np.zeros((2, 3))), "'history' has shape"),
    "object_params": (_object_array("params"), "pickled Python objects"),
    "object_sizes": (_object_array("sizes"), "pickled Python objects"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_file_is_refused_naming_the_file(tmp_path, data, case):
    make, problem = HOSTILE[case]
    valid = _valid_file(tmp_path, data)  # [3, 4, 2] with biases: 26 float64 parameters
    path = tmp_path / f"hostile_{case}.npz"
    make(valid, path)
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        nnfast.Network.load(path)
    assert problem in str(info.value)


def test_hostile_cases_start_from_a_loadable_file(tmp_path, data):
    """The modified files differ from a valid one only in what each case changes."""
    valid = _valid_file(tmp_path, data)
    path = tmp_path / "unchanged.npz"
    _rewrite(valid, path)
    _assert_same_network(nnfast.Network.load(path), nnfast.Network.load(valid))


def test_object_array_is_never_unpickled(tmp_path, data, monkeypatch):
    valid = _valid_file(tmp_path, data)
    path = tmp_path / "evil.npz"
    _object_array("params")(valid, path)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("load unpickled something")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    with pytest.raises(ValueError, match="evil.npz"):
        nnfast.Network.load(path)


def test_unknown_extra_entries_are_ignored(tmp_path, data):
    valid = _valid_file(tmp_path, data)
    path = tmp_path / "extra.npz"
    _rewrite(valid, path, comment=np.array("made by hand"),
             junk=np.array([{"a": 1}], dtype=object))
    _assert_same_network(nnfast.Network.load(path), nnfast.Network.load(valid))


def test_every_single_byte_corruption_is_refused_or_harmless(tmp_path, data):
    """Flip one bit in each byte of a valid file in turn: the load either refuses with a
    ValueError naming the file, or (a flip in a field nothing reads, e.g. a zip timestamp)
    gives back exactly the saved network. Nothing else escapes and nothing wrong loads."""
    net = nnfast.Network([2, 1], seed=1, bias=True)
    valid = tmp_path / "valid.npz"
    net.save(valid)
    contents = valid.read_bytes()
    path = tmp_path / "flipped.npz"
    refused = 0
    for position in range(len(contents)):
        damaged = bytearray(contents)
        damaged[position] ^= 1 << (position % 8)
        path.write_bytes(bytes(damaged))
        try:
            loaded = nnfast.Network.load(path)
        except ValueError as exc:
            assert str(path) in str(exc), position
            refused += 1
        else:
            _assert_same_network(loaded, net)
    assert refused > len(contents) // 2


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        nnfast.Network.load(tmp_path / "absent.npz")


# ------------------------------------------------------------------- pickle and deepcopy

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(data, dtype, backend, protocol):
    net = _trained(data, dtype=dtype, backend=backend, n_threads=2)
    clone = pickle.loads(pickle.dumps(net, protocol=protocol))
    _assert_same_network(clone, net)
    assert clone.iterations_run == net.iterations_run
    for w_clone, w_net in zip(clone.weights, net.weights):
        assert_array_equal(w_clone, w_net)
    _assert_trains_like(net, clone, data)


@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_deepcopy_round_trip(data, dtype, backend, bias):
    net = _trained(data, dtype=dtype, backend=backend, bias=bias)
    clone = copy.deepcopy(net)
    _assert_same_network(clone, net)
    assert clone.params is not net.params
    assert clone.random_state is not net.random_state
    _assert_trains_like(net, clone, data)


def test_copies_are_independent(data):
    net = _trained(data)
    before = net.params.copy()
    state = net.random_state.get_state()
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        _train_more(clone, data)
        assert not np.array_equal(clone.params, before)
    assert_array_equal(net.params, before)
    assert_array_equal(net.random_state.get_state()[1], state[1])
    assert net.random_state.get_state()[2] == state[2]


def test_pickle_of_loaded_network_round_trips(tmp_path, data):
    path = _valid_file(tmp_path, data)
    loaded = nnfast.Network.load(path)
    clone = pickle.loads(pickle.dumps(loaded))
    _assert_same_network(clone, loaded)
    buffer = io.BytesIO()
    pickle.dump(loaded, buffer)
    _assert_same_network(pickle.loads(buffer.getvalue()), loaded)


# ------------------------------------------------------------------------ format version 2

MODELS = {
    "adam_softmax": dict(activation="relu", output="softmax", optimizer=Adam(0.01, 0.8, 0.99,
                                                                             1e-7),
                         alpha=1e-3, bias=True),
    "sgd_mixed": dict(activation=("tanh", "identity"), output="identity",
                      optimizer=SGD(0.02, momentum=0.7, nesterov=False, schedule="invscaling",
                                    power_t=0.25), reduction="sum"),
    "plain_exp": dict(activation="logistic", output="exp", optimizer=GradientStep(0.01)),
    "original_mean": dict(output="original", reduction="mean", bias=True),
    "gelu_silu": dict(activation=("gelu", "silu"), output="logistic", optimizer=Adam(0.01),
                      bias=True),
    "elu_softplus": dict(activation=("elu", "softplus"), output="identity",
                         optimizer=SGD(0.02, momentum=0.5), alpha=1e-3),
}


def _model_network(model, dtype=np.float64, backend="numpy"):
    """A network of that model some way into a shuffled fit (optimizer state, history)."""
    options = MODELS[model]
    sizes = [3, 4, 4, 2] if isinstance(options.get("activation"), tuple) else [3, 4, 2]
    rng = np.random.RandomState(0)
    X = rng.random_sample((10, 3))
    y = np.eye(2)[rng.randint(0, 2, 10)] if options["output"] == "softmax" else \
        rng.random_sample((10, 2))
    net = nnfast.Network(sizes, seed=7, dtype=dtype, backend=backend, **options)
    net.fit(X, y, 6, batch_size=BATCH_SIZE, report_every=2)
    return net, (X, y)


def _assert_same_model(a, b):
    _assert_same_network(a, b)
    assert (a.activations, a.output, a.reduction, a.alpha) == \
        (b.activations, b.output, b.reduction, b.alpha)
    assert a.optimizer == b.optimizer and type(a.optimizer) is type(b.optimizer)
    assert a.optimizer_state == b.optimizer_state
    if a.optimizer_state is not None:
        assert a.optimizer_state.values is not b.optimizer_state.values


def _assert_resumes_like(original, twin, data):
    X, y = data
    expected = original.fit(X, y, 4, batch_size=BATCH_SIZE, resume=True)
    got = twin.fit(X, y, 4, batch_size=BATCH_SIZE, resume=True)
    assert_array_equal(got.params, expected.params)
    assert got.optimizer_state == expected.optimizer_state


@pytest.mark.parametrize("model", list(MODELS))
def test_version_2_round_trip_resumes_identically(tmp_path, model, dtype):
    net, data = _model_network(model, dtype)
    path = tmp_path / "model.npz"
    net.save(path)
    entries = _entries(path)
    assert int(entries["format_version"]) == 2
    # The optimizer fields version 2 had (version 3 added the cosine schedule's and
    # clipping's: a file of a network that leaves them at their defaults has none of them).
    optimizer_keys = {"optimizer_" + name for name in vars(net.optimizer)
                      if name not in V3_OPTIMIZER_FIELDS[type(net.optimizer).__name__]}
    assert set(entries) == DOCUMENTED_KEYS_V2 | optimizer_keys
    assert not any(array.dtype.hasobject for array in entries.values())
    loaded = nnfast.Network.load(path)
    _assert_same_model(loaded, net)
    assert_array_equal(loaded.predict(data[0]), net.predict(data[0]))
    _assert_resumes_like(net, loaded, data)


def test_version_2_entries_are_as_documented(tmp_path):
    net, _ = _model_network("adam_softmax")
    net.save(tmp_path / "m.npz")
    entries = _entries(tmp_path / "m.npz")
    assert entries["activations"].tolist() == ["relu"]
    assert str(entries["output"]) == "softmax" and str(entries["reduction"]) == "mean"
    assert float(entries["alpha"]) == 1e-3 and str(entries["optimizer"]) == "adam"
    assert [float(entries["optimizer_" + k]) for k in
            ("learning_rate", "beta_1", "beta_2", "epsilon")] == [0.01, 0.8, 0.99, 1e-7]
    state = net.optimizer_state
    assert bool(entries["has_optimizer_state"])
    assert entries["optimizer_state_values"].dtype == np.float64
    assert_array_equal(entries["optimizer_state_values"], state.values)
    assert entries["optimizer_state_values"].size == 2 * net.params.size  # m then v
    assert int(entries["optimizer_state_step"]) == state.step == 6 * 4  # 4 batches an epoch
    assert int(entries["optimizer_state_samples_seen"]) == state.samples_seen == 60
    assert float(entries["optimizer_state_learning_rate"]) == state.learning_rate


def test_model_without_optimizer_state_writes_version_2(tmp_path):
    net = nnfast.Network([3, 4, 4, 1], activation=["relu", "tanh"], output="identity")
    net.save(tmp_path / "m.npz")
    entries = _entries(tmp_path / "m.npz")
    assert int(entries["format_version"]) == 2 and not bool(entries["has_optimizer_state"])
    loaded = nnfast.Network.load(tmp_path / "m.npz")
    _assert_same_model(loaded, net)
    assert loaded.optimizer_state is None and loaded.activations == ("relu", "tanh")


def test_original_model_is_written_as_version_1(tmp_path, data):
    """What version 1 represents is written as version 1, so older nnfast reads it; a
    learning rate other than 1.0 in the plain step (not in version 1) needs version 2."""
    _trained(data).save(tmp_path / "v1.npz")
    assert int(_entries(tmp_path / "v1.npz")["format_version"]) == 1
    assert set(_entries(tmp_path / "v1.npz")) == DOCUMENTED_KEYS
    nnfast.Network([3, 1], optimizer=GradientStep(0.5)).save(tmp_path / "v2.npz")
    assert int(_entries(tmp_path / "v2.npz")["format_version"]) == 2
    assert nnfast.Network.load(tmp_path / "v2.npz").optimizer == GradientStep(0.5)


def test_version_1_file_of_the_previous_nnfast_loads_as_the_network_it_was(data):
    loaded = nnfast.Network.load(V1_FIXTURE)
    assert int(_entries(V1_FIXTURE)["format_version"]) == 1
    # The same network, built and trained again today: the original's arithmetic unchanged.
    again = _trained(data, backend="numpy")
    _assert_same_network(loaded, again)
    assert loaded.iterations_run == again.iterations_run == 12
    assert loaded.activations == ("logistic",) and loaded.output == "original"
    assert loaded.reduction == "sum" and loaded.alpha == 0.0
    assert loaded.optimizer == GradientStep() and loaded.optimizer_state is None
    _assert_trains_like(again, loaded, data)


def _v2_file(tmp_path, name="v2.npz"):
    net, _ = _model_network("adam_softmax")
    path = tmp_path / name
    net.save(path)
    return path


HOSTILE_V2 = {
    "unknown_activation": ({"activations": np.array(["swish"])}, "unknown activation 'swish'"),
    "activation_count": ({"activations": np.array(["relu", "relu"])}, "2 names for 1 hidden"),
    "activations_not_strings": ({"activations": np.array([1.0])}, "'activations' must be"),
    "unknown_output": ({"output": np.array("sigmoid")}, "'output' must be one of"),
    "unknown_reduction": ({"reduction": np.array("max")}, "'reduction' must be one of"),
    "negative_alpha": ({"alpha": np.array(-1.0)}, "'alpha' must be a finite float >= 0"),
    "unknown_optimizer": ({"optimizer": np.array("rmsprop")}, "'optimizer' must be one of"),
    "bad_optimizer_field": ({"optimizer_beta_1": np.array(1.5)}, "invalid optimizer"),
    "optimizer_field_missing": ({"optimizer_epsilon": None}, "missing entries: "
                                                             "optimizer_epsilon"),
    "optimizer_field_array": ({"optimizer_beta_2": np.ones(2)}, "must be a scalar"),
    "missing_v2_entry": ({"output": None}, "missing entries: output"),
    "state_length": ({"optimizer_state_values": np.zeros(7)}, "'optimizer_state_values' has "
                                                              "shape"),
    "state_dtype": ({"optimizer_state_values": np.zeros(52, dtype=np.float32)},
                    "'optimizer_state_values' must be float64"),
    "state_nan": ({"optimizer_state_values": np.full(52, np.nan)}, "NaN or infinite"),
    "state_negative_step": ({"optimizer_state_step": np.array(-1)}, "must be >= 0"),
    "state_flag_int": ({"has_optimizer_state": np.array(1)}, "'has_optimizer_state' must be"),
    "state_rate_inf": ({"optimizer_state_learning_rate": np.array(np.inf)}, "finite float"),
}


@pytest.mark.parametrize("case", list(HOSTILE_V2))
def test_hostile_version_2_file_is_refused_naming_the_file(tmp_path, case):
    changes, problem = HOSTILE_V2[case]
    valid = _v2_file(tmp_path)
    path = tmp_path / f"hostile_{case}.npz"
    _rewrite(valid, path, **changes)
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        nnfast.Network.load(path)
    assert problem in str(info.value)


def test_hostile_version_2_cases_start_from_a_loadable_file(tmp_path):
    valid = _v2_file(tmp_path)
    path = tmp_path / "unchanged.npz"
    _rewrite(valid, path)
    _assert_same_model(nnfast.Network.load(path), nnfast.Network.load(valid))


@pytest.mark.parametrize("model", list(MODELS))
def test_pickle_and_deepcopy_carry_the_model_and_optimizer_state(model):
    net, data = _model_network(model)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        _assert_same_model(clone, net)
        _assert_resumes_like(copy.deepcopy(net), clone, data)


def test_pickle_from_before_model_options_loads_as_the_original(data):
    """A Network pickled by an nnfast without model options has none of their attributes."""
    net = _trained(data)
    old = copy.copy(net)
    for name in ("activations", "output", "optimizer", "alpha", "reduction",
                 "optimizer_state"):
        delattr(old, name)
    clone = pickle.loads(pickle.dumps(old))
    _assert_same_model(clone, net)
    _assert_trains_like(net, clone, data)
