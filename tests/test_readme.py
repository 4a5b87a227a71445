"""The README's promises: CI runs its test command verbatim, and its examples run."""

import pathlib
import re

import numpy as np
import pytest

import nnfast
from conftest import GENERAL_BACKENDS

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(language, section=None):
    """The code blocks of a language, in the whole README or under one ``## `` heading."""
    text = README if section is None else README.split(f"\n## {section}\n", 1)[1].split(
        "\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_quickstart_has_two_commands_and_ci_runs_the_test_one_verbatim():
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in re.findall(r"```bash\n(.*?)```", quickstart, re.S)]
    assert len(commands) == 2
    assert "python -m nnfast" in commands[0]
    assert "pytest" in commands[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci_lines


def test_drop_in_example_gives_the_original_loops_weights(capsys):
    original, swapped = _blocks("python", "The drop-in swap")
    original_namespace, swapped_namespace = {}, {}
    exec(original, original_namespace)
    exec(swapped, swapped_namespace)
    for name in ("syn0", "syn1"):
        np.testing.assert_allclose(swapped_namespace[name], original_namespace[name],
                                   rtol=0, atol=1e-9)
    assert isinstance(swapped_namespace["net"], nnfast.Network)
    assert "[0.  0.5 1. ]" in capsys.readouterr().out


def test_saving_and_estimator_examples_run(tmp_path, monkeypatch, capsys):
    _, swapped = _blocks("python", "The drop-in swap")
    (saving,) = _blocks("python", "Saving a model")
    _, estimators = _blocks("python", "scikit-learn estimators")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(swapped, namespace)
    exec(saving, namespace)
    np.testing.assert_array_equal(namespace["same"].predict(namespace["X"]),
                                  namespace["net"].predict(namespace["X"]))
    exec(estimators, {})
    score_line = capsys.readouterr().out.splitlines()[-2]
    assert float(score_line) >= 0.93


def test_model_options_example_trains_as_it_says(capsys):
    (example,) = _blocks("python", "Model options")
    if "cython" not in GENERAL_BACKENDS:
        # Before the compiled general path exists in this tree the example runs on the
        # reference, which the compiled path is tested to match.
        example = example.replace("bias=True,", 'bias=True, backend="numpy",')
    namespace = {}
    exec(example, namespace)
    printed = capsys.readouterr().out.splitlines()
    iteration, loss = eval(printed[0])
    assert iteration == 49 and 0 < loss < 0.2
    assert float(printed[1]) >= 0.97
    state = namespace["net"].optimizer_state
    assert state.step == 60 * 10 and state.samples_seen == 60 * 300


def test_mlp_migration_example_matches_scikit_learn(capsys, monkeypatch):
    from threadpoolctl import threadpool_limits

    migration, _ = _blocks("python", "scikit-learn estimators")
    # One thread for both (nnfast's default follows OMP_NUM_THREADS): on a machine busy with
    # other work, spinning thread pools make these small fits many times slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with threadpool_limits(1):
        exec(migration, {})
        ours = float(capsys.readouterr().out.splitlines()[-1])
        exec(migration.replace("from nnfast.sklearn import MLPClassifier",
                               "from sklearn.neural_network import MLPClassifier"), {})
        theirs = float(capsys.readouterr().out.splitlines()[-1])
    assert abs(ours - theirs) < 0.01 and ours > 0.93


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_dask_examples_train_and_search(capsys):
    """The Dask section's training example (an embedded LocalCluster) and its model search
    run as written; the other blocks there need a real cluster's addresses."""
    blocks = _blocks("python", "Scaling out with Dask")
    training = next(block for block in blocks if "nnfast.dask.fit(net, X, y, iterations=20, " in block)
    search = next(block for block in blocks if "GridSearchCV" in block)
    namespace = {"__name__": "__main__"}
    exec(training, namespace)
    net = namespace["net"]
    assert net.iterations_run == 20 and [i for i, _ in net.history] == [0, 5, 10, 15]
    errors = [e for _, e in net.history]
    assert errors[-1] < errors[0]
    exec(search, {"__name__": "__main__"})
    printed = capsys.readouterr().out
    assert "{'networkclassifier__hidden_layer_sizes': (" in printed
