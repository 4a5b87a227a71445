"""Dropout (``Network(dropout=)``; the estimators' in tests/sklearn/test_mlp_dropout.py): the
masks nnfast.reference states, statistically (rate, independence between units, rows, layers,
epochs and seeds), their scale exactly, and what a fit with dropout guarantees: the same fit
from the same seed, on any number of threads; predictions with every unit; 0 is no dropout at
all; a failed fit leaves the random state alone; options checked, saved and pickled. The
kernel's masks against the reference's: tests/kernels/test_general_kernel.py."""

import copy
import pickle

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy import stats

import nnfast
from nnfast import reference
from nnfast.optimizers import SGD, Adam

SIZES = (6, 50, 30, 3)
RATES = (0.2, 0.5)


def _masks(seed=7, first=0, rows=2000, rates=RATES, dtype=np.float64):
    return reference.dropout_masks(SIZES, rates, seed, first, rows, dtype)


def _two_sided_binomial_ok(kept, total, rate):
    """Whether kept of total is a plausible draw of Binomial(total, 1 - rate) (p > 1e-4)."""
    return stats.binomtest(int(kept), int(total), 1 - rate).pvalue > 1e-4


# -------------------------------------------------------------------------- the masks

@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.9])
def test_masks_keep_each_unit_at_the_rate(rate):
    mask, _ = _masks(rates=(rate, 0.0))[0], None
    kept = (mask != 0).sum()
    assert _two_sided_binomial_ok(kept, mask.size, rate)
    # Per unit and per row, the counts are binomial too: a chi-square over the units.
    per_unit = (mask != 0).sum(axis=0)
    expected = mask.shape[0] * (1 - rate)
    chi2 = (((per_unit - expected) ** 2) / (expected * rate)).sum()
    assert stats.chi2.sf(chi2, df=mask.shape[1]) > 1e-4


def test_kept_units_are_scaled_exactly():
    """A kept unit is multiplied by 1 / (1 - rate), computed in float64 and rounded once to
    the network's dtype; a dropped one by 0."""
    for dtype in (np.float32, np.float64):
        for mask, rate in zip(_masks(dtype=dtype), RATES):
            assert mask.dtype == dtype
            assert set(np.unique(mask)) == {dtype(0), dtype(1.0 / (1.0 - rate))}


def test_masks_are_independent_across_units_rows_layers_and_seeds():
    """Pairs of neighbouring units, neighbouring rows, the two layers and two seeds: the
    joint counts of kept/kept match independence (chi-square on 2x2 tables)."""
    first, second = _masks()
    other_seed = _masks(seed=8)[0]
    pairs = {
        "units": (first[:, :-1], first[:, 1:]),
        "rows": (first[:-1], first[1:]),
        "layers": (first[:, :30], second),
        "seeds": (first, other_seed),
    }
    for name, (a, b) in pairs.items():
        a, b = (a != 0).ravel(), (b != 0).ravel()
        table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
        assert stats.chi2_contingency(table)[1] > 1e-4, name


def test_masks_depend_on_position_not_on_batches():
    """The masks of rows 100..199 are the same drawn as a batch of their own or inside a
    longer one; later positions (the next epoch's, samples_seen further on) differ."""
    whole = _masks(first=0, rows=300)
    part = _masks(first=100, rows=100)
    for a, b in zip(whole, part):
        assert_array_equal(a[100:200], b)
    later = _masks(first=300, rows=300)
    assert not np.array_equal(whole[0], later[0])


def test_zero_rate_layer_has_no_mask():
    assert _masks(rates=(0.0, 0.3))[0] is None


# ----------------------------------------------------------------------------- fits

def _data(rows=240):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(rows, SIZES[0]))
    y = np.eye(SIZES[-1])[rng.randint(0, SIZES[-1], rows)]
    return X, y


def _network(dropout=RATES, **options):
    options = {"optimizer": Adam(learning_rate=0.01), **options}
    return nnfast.Network(list(SIZES), seed=3, activation="relu", output="softmax", bias=True,
                          dropout=dropout, **options)


def _stream(net):
    key, position = net.random_state.get_state()[1:3]
    return key.copy(), position


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_same_seed_same_fit_and_each_fit_draws_anew(backend):
    X, y = _data()
    a, b = _network(backend=backend), _network(backend=backend)
    a.fit(X, y, 5, batch_size=32)
    b.fit(X, y, 5, batch_size=32)
    assert_array_equal(a.params, b.params)
    # Each fit draws its seed from the network's random state, which goes on: a second fit
    # from the same weights masks differently from the first.
    before = _stream(a)
    first = a.params.copy()
    a.fit(X, y, 1, batch_size=32, shuffle=False)
    c = _network(backend=backend)
    c.params[...] = first
    c.fit(X, y, 1, batch_size=32, shuffle=False)
    assert _stream(a)[1] != before[1] or not np.array_equal(_stream(a)[0], before[0])
    assert not np.array_equal(a.params, c.params)


def test_threads_do_not_change_the_fit():
    X, y = _data(600)
    fits = []
    for n_threads in (1, 2):
        net = _network(n_threads=n_threads)
        net.fit(X, y, 4, batch_size=300)
        fits.append(net.params)
    assert_array_equal(fits[0], fits[1])


def test_rate_zero_is_no_dropout_bit_for_bit():
    X, y = _data()
    with_zero, without = _network(dropout=0.0), _network(dropout=(0.0, 0.0))
    plain = nnfast.Network(list(SIZES), seed=3, activation="relu", output="softmax", bias=True,
                           optimizer=Adam(learning_rate=0.01))
    for net in (with_zero, without, plain):
        net.fit(X, y, 3, batch_size=32)
    assert_array_equal(with_zero.params, plain.params)
    assert_array_equal(without.params, plain.params)
    assert_array_equal(with_zero.random_state.get_state()[1], plain.random_state.get_state()[1])


def test_dropout_changes_training_but_not_prediction():
    X, y = _data()
    dropped, plain = _network(), _network(dropout=0.0)
    dropped.fit(X, y, 3, batch_size=32)
    plain.fit(X, y, 3, batch_size=32)
    assert not np.allclose(dropped.params, plain.params)
    # Prediction uses every unit, unscaled: the same as a network without dropout holding
    # the same weights.
    plain.params[...] = dropped.params
    assert_array_equal(dropped.predict(X), plain.predict(X))


def test_failed_fit_leaves_the_random_state_and_weights():
    X, y = _data()
    net = _network(optimizer=SGD(learning_rate=1e30))
    before = copy.deepcopy(net.random_state.get_state())
    params = net.params.copy()
    with pytest.raises(nnfast.TrainingDivergedError):
        net.fit(X, y, 3, batch_size=32)
    after = net.random_state.get_state()
    assert_array_equal(after[1], before[1])
    assert after[2] == before[2]
    assert_array_equal(net.params, params)


@pytest.mark.parametrize("dropout, error, match", [
    (1.0, ValueError, r"dropout must be in \[0, 1\), got 1.0"),
    (-0.1, ValueError, r"dropout must be in \[0, 1\)"),
    ((0.1,), ValueError, "dropout has 1 rates but the network has 2 hidden layers"),
    ((0.1, "a"), TypeError, r"dropout\[1\] must be a real number"),
    ("0.1", TypeError, "dropout must be a rate or a sequence of rates"),
    (True, TypeError, "dropout must be a real number"),
])
def test_bad_dropout_is_refused_by_name(dropout, error, match):
    with pytest.raises(error, match=match):
        _network(dropout=dropout)


def test_no_hidden_layer_takes_no_dropout():
    with pytest.raises(ValueError, match="needs a hidden layer"):
        nnfast.Network([3, 1], dropout=0.5)
    assert nnfast.Network([3, 1], dropout=0.0).dropout == ()


def test_dropout_is_saved_loaded_pickled_and_shown(tmp_path):
    X, y = _data()
    net = _network()
    net.fit(X, y, 2, batch_size=32)
    assert "dropout=(0.2, 0.5)" in repr(net)
    assert "dropout=0.3" in repr(_network(dropout=0.3))
    path = tmp_path / "net.npz"
    net.save(path)
    for copy_ in (nnfast.Network.load(path), pickle.loads(pickle.dumps(net))):
        assert copy_.dropout == RATES
        # Both continue as the original does.
        twin = copy.deepcopy(net)
        copy_.fit(X, y, 2, batch_size=32)
        twin.fit(X, y, 2, batch_size=32)
        assert_array_equal(copy_.params, twin.params)


def test_dask_fit_refuses_dropout():
    from nnfast.dask import fit as dask_fit

    X, y = _data()
    with pytest.raises(ValueError, match="does not support dropout"):
        dask_fit(_network(optimizer=SGD(learning_rate=0.1)), X, y, iterations=1)
