"""The README's promises: CI runs its test command verbatim, and its example runs.

The guide's examples, the docs build commands and the README's links to the docs are
checked in test_docs.py.
"""

import pathlib
import re

import numpy as np

import nnfast

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
    assert commands == ["python -m pip install -e . && python -m nnfast",
                        'python -m pip install -e ".[test]" && python -m pytest']
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci_lines


def test_the_example_gives_the_original_loops_weights(capsys):
    """The README's network against the original program's loop, which the guide shows
    (docs/user_guide/original.rst, its first code block)."""
    network, migration = _blocks("python", "Example")
    guide = (ROOT / "docs" / "user_guide" / "original.rst").read_text()
    loop = re.search(r"\.\. testcode:: dropin\n\n((?:(?:   .*)?\n)+)", guide).group(1)
    assert "for j in range(60000):" in loop
    original_namespace, namespace = {}, {}
    exec(re.sub(r"(?m)^   ", "", loop), original_namespace)
    exec(network, namespace)
    assert isinstance(namespace["net"], nnfast.Network)
    for name in ("syn0", "syn1"):
        np.testing.assert_allclose(namespace[name], original_namespace[name], rtol=0, atol=1e-9)
    # The print is the network's prediction after training, the original's last l2 almost.
    assert capsys.readouterr().out.strip() == str(namespace["net"].predict(namespace["X"]))
    np.testing.assert_allclose(namespace["net"].predict(namespace["X"]),
                               original_namespace["l2"], atol=1e-5)


def test_the_migration_lines_swap_the_import():
    _, migration = _blocks("python", "Example")
    commented, line = migration.strip().splitlines()
    assert commented == "# from sklearn.neural_network import MLPClassifier"
    namespace = {}
    exec(migration, namespace)
    import nnfast.sklearn

    assert namespace["MLPClassifier"] is nnfast.sklearn.MLPClassifier
