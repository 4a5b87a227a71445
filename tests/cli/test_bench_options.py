"""``python -m nnfast bench --options`` (nnfast/cli/bench/options.py) and its PyTorch peer
(nnfast/cli/bench/torch_mlp.py).

The mode runs on shrunk workloads (digits-adam: 300 rows, 20000x40-adam: 400 rows, 3 epochs
each); its table is checked for its columns and its ratios. The tests marked ``torch`` check
that the PyTorch model of every row is the model nnfast's estimator fits: from the
estimator's initial weights, one full-batch step of plain SGD at rate 1 reveals the
estimator's loss (``loss_curve_[0]``) and gradient (the step), which the peer's loss and
autograd gradient must equal; dropout's against ``nnfast.reference.backprop`` given the masks
PyTorch drew; the cosine schedule's rates against ``nnfast.reference.cosine_rate``. They import
torch inside each test (tests/conftest.py only keeps tests/test_reference_torch.py from being
imported where torch tests are deselected), so that where they are selected a missing torch
fails them rather than skipping them.
"""

import dataclasses
import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

from nnfast import __main__ as cli
from nnfast import reference
from nnfast.cli import bench
from nnfast.cli.bench import options as bench_options
from nnfast.cli.bench import torch_mlp

SHRUNK_ROWS = {"digits-adam": 300, "20000x40-adam": 400}


@pytest.fixture
def shrunk(monkeypatch):
    """The option workloads cut to a few hundred rows and 3 epochs, the settle pause to 10 ms."""
    from nnfast.cli.bench import workloads

    monkeypatch.setattr(bench, "_SETTLE_SECONDS", 0.01)
    for name, rows in SHRUNK_ROWS.items():
        monkeypatch.setitem(workloads.MLP_WORKLOADS, name, dataclasses.replace(
            workloads.MLP_WORKLOADS[name], rows=rows, max_iter=3))
    return workloads.MLP_WORKLOADS


def _table(out):
    """The header and rows (as lists of cells) of the --options table in out."""
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    header_at = next(i for i, line in enumerate(lines) if line.startswith("| option workload"))
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")]
             for line in lines[header_at:]]
    return split[0], split[1:]


def _number(cell):
    return float(cell.rstrip("x").replace(",", ""))


def _run(argv, capsys):
    assert cli.main(["bench", "--options", "--repeats", "1", *argv]) == 0
    return capsys.readouterr().out


def test_options_mode_times_every_case_beside_its_fit_without_it(shrunk, capsys):
    out = _run(["--no-torch"], capsys)
    assert "CPU flags:" in out and "Versions:" in out  # the header of the other modes
    assert "PyTorch left out (--no-torch)" in out
    header, rows = _table(out)
    assert header == ["option workload", "dtype", "threads", "option", "nnfast ms/fit",
                      "without", "without ms/fit", "option / without", "target",
                      "last loss: nnfast"]
    # Every case on both workloads in both dtypes, once.
    expected = {(name, dtype, bench_options.label(case))
                for name in bench_options.OPTIONS_WORKLOADS for dtype in ("float64", "float32")
                for case in bench_options.CASES.values()}
    assert sorted((r[0], r[1], r[3]) for r in rows) == sorted(expected)
    withouts = {}
    for cells in rows:
        case = next(c for c in bench_options.CASES.values()
                    if bench_options.label(c) == cells[3])
        assert cells[5] == case.without
        option_ms, without_ms = _number(cells[4]), _number(cells[6])
        assert option_ms > 0 and without_ms > 0
        assert _number(cells[7]) == pytest.approx(option_ms / without_ms, rel=0.02, abs=0.01)
        if case.ratio_target is None:
            assert cells[8] == "-"
        else:
            assert cells[8].startswith("<= 1.3x ")
            assert cells[8].endswith(" met") == (_number(cells[7]) <= 1.3)
        assert np.isfinite(float(cells[9]))
        # The cases beside the same fit share one timing of it.
        withouts.setdefault((cells[0], cells[1], case.regression), set()).add(cells[6])
    assert all(len(times) == 1 for times in withouts.values())


_WITHOUT_TORCH = """
import dataclasses, sys

class NoTorch:
    # PyTorch as if not installed: its import fails.
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r}")

sys.meta_path.insert(0, NoTorch())
from nnfast.cli import bench
from nnfast.cli.bench import workloads
bench._SETTLE_SECONDS = 0.01
workloads.MLP_WORKLOADS["digits-adam"] = dataclasses.replace(
    workloads.MLP_WORKLOADS["digits-adam"], rows=300, max_iter=3)
sys.exit(bench.main(sys.argv[1:]))
"""


def test_options_mode_without_torch_installed_runs_nnfasts_side():
    """In a process where torch cannot be imported: the rows run nnfast's side and the
    output says that PyTorch is missing."""
    from conftest import child_env

    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH, "--options", "--repeats", "1", "--workload",
         "digits-adam", "--dtype", "float32", "--option", "gelu", "--option", "huber"],
        capture_output=True, text=True, timeout=300, env=child_env())
    assert result.returncode == 0, result.stderr
    assert "PyTorch is not installed" in result.stdout
    header, rows = _table(result.stdout)
    assert "PyTorch ms/fit" not in header and "vs PyTorch" not in header
    assert [(r[0], r[1], r[3], r[5]) for r in rows] == [
        ("digits-adam", "float32", "gelu", "relu"),
        ("digits-adam", "float32", "huber", "squared_error")]


@pytest.mark.parametrize("argv", [["--option", "gelu"], ["--options", "--pipeline"],
                                  ["--options", "--workload", "iris-adam"],
                                  ["--options", "--plot", "x.png"],
                                  ["--options", "--option", "nope"]])
def test_bad_options_command_lines_fail_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", *argv])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip()


def test_options_table_format_lists_every_row():
    row = {"workload": "digits-adam", "dtype": "float32", "case": "gelu", "option": "gelu",
           "without": "relu", "threads": 2, "torch_threads": 2, "seconds": 0.012,
           "without_seconds": 0.010, "ratio": 1.2, "ratio_target": 1.3,
           "torch_seconds": 0.048, "vs_torch": 4.0, "torch_target": 5.0, "loss": 0.12345,
           "torch_loss": 0.125}
    huber = dict(row, case="huber", option="huber", without="squared_error", ratio=1.5,
                 ratio_target=None, torch_seconds=None, vs_torch=None, torch_target=None,
                 torch_loss=None)
    table = bench_options.format_table([row, huber])
    assert ("| digits-adam | float32 | 2 | gelu | 12.00 | relu | 10.00 | 1.20x | <= 1.3x met "
            "| 2 | 48.00 | 4.00x | >= 5x MISSED | 0.1235 | 0.125 |") in table
    assert ("| digits-adam | float32 | 2 | huber | 12.00 | squared_error | 10.00 | 1.50x | - "
            "| - | - | - | - | 0.1235 | - |") in table
    assert "PyTorch" not in bench_options.format_table([huber])


def test_regression_targets_are_the_noisy_scores_behind_the_labels(shrunk):
    """20000x40's targets are the scores whose largest is its label; digits' are made the same
    way from its inputs; both on the classification workload's X."""
    for name, columns in (("20000x40-adam", 4), ("digits-adam", 10)):
        workload = shrunk[name]
        X, labels = workload.data(np.float32)
        X_r, Y = workload.regression_data(np.float32)
        assert_allclose(X_r, X, rtol=0, atol=0)
        assert Y.shape == (SHRUNK_ROWS[name], columns) and Y.dtype == np.float32
        assert Y.std() > 1  # both sides of Huber's delta = 1
        if name == "20000x40-adam":
            assert (Y.argmax(axis=1) == labels).all()
    with pytest.raises(ValueError, match="sparse"):
        shrunk["tfidf-sparse-adam"].regression_data()


def test_peer_reads_the_estimator_parameters_and_refuses_what_it_does_not_write():
    base = {"hidden_layer_sizes": (100,), "solver": "adam", "max_iter": 5, "tol": 0.0,
            "n_iter_no_change": 6, "random_state": 0}
    peer = torch_mlp.Peer.from_params({**base, "activation": "gelu", "dropout": 0.2,
                                       "learning_rate": "cosine", "max_grad_norm": 1.0},
                                      classifier=True)
    assert (peer.activation, peer.dropout, peer.schedule, peer.max_grad_norm) == \
        ("gelu", (0.2,), "cosine", 1.0)
    assert torch_mlp.Peer.from_params(base, classifier=False).loss == "squared_error"
    huber = torch_mlp.Peer.from_params({**base, "loss": "huber", "huber_delta": 2.0}, False)
    assert (huber.loss, huber.huber_delta) == ("huber", 2.0)
    for bad in ({"solver": "lbfgs"}, {"early_stopping": True}, {"shuffle": False},
                {"loss": "quantile"}, {"activation": "swish"},
                {"learning_rate": "invscaling"}, {"dropout": (0.1, 0.2)}):
        with pytest.raises(ValueError):
            torch_mlp.Peer.from_params({**base, **bad}, classifier=not bad.get("loss"))


# --- the PyTorch peer computes nnfast's function (marked torch) --------------------------------

def _one_step_of_the_estimator(workload, case_params, regression):
    """(X, y, initial coefs + intercepts, loss at them, gradient at them) of nnfast's estimator
    with case_params: one full-batch step of plain SGD at rate 1 from its initial weights
    (scikit-learn's draw from random_state=0, nnfast.reference.init_coefs)."""
    from nnfast.sklearn import MLPClassifier, MLPRegressor

    X, y = workload.regression_data(np.float64) if regression else workload.data(np.float64)
    params = {**workload.params(max_iter=1), **case_params, "solver": "sgd", "momentum": 0.0,
              "learning_rate_init": 1.0, "batch_size": len(X), "shuffle": False}
    Estimator = MLPRegressor if regression else MLPClassifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch does not converge
        model = Estimator(**params).fit(X, y)
    outputs = y.shape[1] if regression else len(np.unique(y))
    sizes = [X.shape[1], *params["hidden_layer_sizes"], outputs]
    W0, b0 = reference.init_coefs(sizes, np.random.RandomState(0),
                                  params.get("activation", "relu"))
    gradient = [a - b for a, b in zip(W0 + b0, model.coefs_ + model.intercepts_)]
    return X, y, W0 + b0, model.loss_curve_[0], gradient


def _peer_at(peer, initial, X, y):
    """The peer's model at the given weights, its loss and its autograd gradient on X, y."""
    import torch

    n_layers = len(initial) // 2
    model = torch_mlp.build_model(peer, X.shape[1], initial[n_layers - 1].shape[1],
                                  np.float64)
    torch_mlp.set_weights(model, initial[:n_layers], initial[n_layers:])
    layers = torch_mlp.linear_layers(model)
    data, penalty = torch_mlp.backward(peer, model, [layer.weight for layer in layers],
                                       torch_mlp.data_loss(peer), torch.from_numpy(X),
                                       torch_mlp.targets(peer, y))
    gradient = ([layer.weight.grad.numpy().T for layer in layers]
                + [layer.bias.grad.numpy() for layer in layers])
    return model, float(data.detach() + penalty.detach()), gradient


_SAME_MODEL_CASES = [c for c in bench_options.CASES.values() if c.name != "dropout"] + [
    bench_options.Case("classifier", (), ""),
    bench_options.Case("squared_error", (("loss", "squared_error"),), "", regression=True)]


@pytest.mark.torch
@pytest.mark.parametrize("workload_name", list(SHRUNK_ROWS))
@pytest.mark.parametrize("case", _SAME_MODEL_CASES, ids=lambda case: case.name)
def test_peer_loss_and_gradient_are_the_estimators(case, workload_name, shrunk):
    """Each row's PyTorch model (every case, and the fits without an option) from the
    estimator's initial weights: its loss and gradient (clipped where the case clips) are the
    estimator's, float64, to rounding."""
    import torch  # noqa: F401  (a missing torch fails here)

    workload = shrunk[workload_name]
    X, y, initial, loss, gradient = _one_step_of_the_estimator(
        workload, case.estimator_params, case.regression)
    peer = torch_mlp.Peer.from_params({**workload.params(), **case.estimator_params},
                                      classifier=not case.regression)
    _, peer_loss, peer_gradient = _peer_at(peer, initial, X, y)
    assert peer_loss == pytest.approx(loss, rel=1e-12)
    for k, (ours, theirs) in enumerate(zip(peer_gradient, gradient)):
        assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12 * np.abs(theirs).max(),
                        err_msg=f"array {k}")
    if peer.max_grad_norm is not None:
        # The clipping did clip: unclipped, the gradient's norm is above max_grad_norm (by
        # more than 5%, far beyond the tolerance).
        unclipped = dataclasses.replace(peer, max_grad_norm=None)
        _, _, free = _peer_at(unclipped, initial, X, y)
        assert np.sqrt(sum((g ** 2).sum() for g in free)) > 1.05 * peer.max_grad_norm


@pytest.mark.torch
def test_peer_cosine_schedule_is_nnfasts(shrunk):
    """The peer's CosineAnnealingLR, stepped once per epoch, sets each epoch's rate to
    nnfast.reference.cosine_rate's (the rate nnfast's cosine schedule uses), and its clipping
    is clip_grad_norm_ at the case's max_grad_norm."""
    workload = shrunk["digits-adam"]
    params = {**workload.params(), **bench_options.CASES["cosine-clip"].estimator_params}
    peer = torch_mlp.Peer.from_params(params, classifier=True)
    model = torch_mlp.build_model(peer, 64, 10, np.float64)
    epochs = 7
    optimizer, scheduler = torch_mlp.make_optimizer(peer, model, epochs)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert_allclose(rates, [reference.cosine_rate(0.001, e, epochs) for e in range(epochs)],
                    rtol=1e-12, atol=1e-18)
    assert rates[0] == 0.001 and rates[-1] < rates[1]


@pytest.mark.torch
@pytest.mark.parametrize("workload_name", list(SHRUNK_ROWS))
def test_peer_dropout_is_nnfasts_with_the_same_masks(workload_name, shrunk):
    """The dropout row's model: torch.nn.Dropout(0.2) after the hidden activation. In
    training, with the units PyTorch dropped given to nnfast.reference.backprop as dropout
    masks (1 / (1 - p) kept, 0 dropped), loss and gradient are the reference's; in evaluation
    the model is the one without dropout."""
    import torch

    workload = shrunk[workload_name]
    case = bench_options.CASES["dropout"]
    peer = torch_mlp.Peer.from_params({**workload.params(), **case.estimator_params},
                                      classifier=True)
    X, labels = workload.data(np.float64)
    classes = len(np.unique(labels))
    sizes = [X.shape[1], 100, classes]
    weights, biases = reference.init_coefs(sizes, np.random.RandomState(0), dtype=np.float64)
    dropouts = [m for m in torch_mlp.build_model(peer, X.shape[1], classes, np.float64)
                if isinstance(m, torch.nn.Dropout)]
    assert [d.p for d in dropouts] == [0.2]
    seen = []
    torch.manual_seed(3)
    with torch.nn.modules.module.register_module_forward_hook(
            lambda module, inputs, output: seen.append((inputs[0], output))
            if isinstance(module, torch.nn.Dropout) else None):
        model, loss, gradient = _peer_at(peer, weights + biases, X, labels)
    (before, after), = seen
    kept = (after != 0).numpy()
    active = (before != 0).numpy()
    assert 0.7 < kept[active].mean() < 0.9  # of the units ReLU let through, about 1 - p kept
    assert_allclose(after.detach().numpy()[kept], before.detach().numpy()[kept] / 0.8,
                    rtol=1e-15)
    # A unit whose activation is 0 (ReLU) reads as dropped, which changes neither side: its
    # output is 0 and ReLU's slope there is 0.
    masks = [np.where(kept, 1 / (1 - 0.2), 0.0)]
    weight_grads = [np.empty_like(w) for w in weights]
    bias_grads = [np.empty_like(b) for b in biases]
    onehot = np.eye(classes)[labels]
    expected, _ = reference.backprop(weights, biases, X, onehot, None, ("relu",), "softmax",
                                     1e-4, "mean", weight_grads, bias_grads, masks=masks)
    assert loss == pytest.approx(expected, rel=1e-12)
    for k, (ours, theirs) in enumerate(zip(gradient, weight_grads + bias_grads)):
        assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12 * np.abs(theirs).max(),
                        err_msg=f"array {k}")
    model.eval()
    plain = torch_mlp.build_model(dataclasses.replace(peer, dropout=()), X.shape[1], classes,
                                  np.float64)
    torch_mlp.set_weights(plain, weights, biases)
    with torch.no_grad():
        assert torch.equal(model(torch.from_numpy(X)), plain(torch.from_numpy(X)))
