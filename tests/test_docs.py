"""The documentation's promises: its examples run and say what they show, its build commands
are the ones CI runs, and every file it points at exists.

The Sphinx build runs the guide's doctests too (``-b doctest``, in .ci/run); these tests check
the same sources without Sphinx, so that the suite holds them to account wherever it runs
(an installed wheel at the minimum versions included), and check what a doctest cannot: the
examples against scikit-learn's own estimators and the original loop, and the examples that
start Dask workers.
"""

import doctest
import pathlib
import re
import runpy
import sys
import textwrap

import numpy as np
import pytest

import nnfast

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
# Only the hand-written sources: a local build leaves generated .rst files beside them.
GENERATED = ("_build", "auto_examples", "generated")
SOURCES = sorted(path for path in DOCS.rglob("*.rst")
                 if not set(path.relative_to(DOCS).parts) & set(GENERATED))

# A directive, its argument, its option lines, then the indented body (blank lines included).
_DIRECTIVE = re.compile(
    r"^\.\. (?P<kind>[\w-]+)::[ \t]*(?P<argument>[^\n]*)\n"
    r"(?P<options>(?:   :[\w-]+:[^\n]*\n)*)"
    r"(?P<body>(?:(?:   [^\n]*)?\n)+)",
    flags=re.M)


def _directives(page, kind):
    """(argument, options, body) of every ``.. kind::`` directive on a docs page, in order."""
    text = (DOCS / page).read_text()
    found = []
    for match in _DIRECTIVE.finditer(text):
        if match.group("kind") == kind:
            options = dict(re.findall(r":([\w-]+):[ \t]*([^\n]*)", match.group("options")))
            found.append((match.group("argument").strip(), options,
                          textwrap.dedent(match.group("body")).strip("\n") + "\n"))
    return found


def _testcode(page, group):
    """The bodies of a doctest group's ``testcode`` blocks on a page, hidden ones included."""
    blocks = [body for argument, _, body in _directives(page, "testcode") if argument == group]
    assert blocks, f"no testcode of group {group!r} in {page}"
    return blocks


def _testoutput(page, group):
    return [body for argument, _, body in _directives(page, "testoutput") if argument == group]


def _named_code(page, name):
    (body,) = [body for _, options, body in _directives(page, "code-block")
               if options.get("name") == name]
    return body


# sphinx.ext.doctest's default flags.
_FLAGS = doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL | doctest.DONT_ACCEPT_TRUE_FOR_1
_GROUP_KINDS = ("testcode", "testoutput", "doctest")


def _groups():
    """(page, group) of every doctest group on the hand-written pages."""
    found = []
    for path in SOURCES:
        page = path.relative_to(DOCS).as_posix()
        for kind in _GROUP_KINDS:
            for argument, _, _ in _directives(page, kind):
                if (page, argument) not in found:
                    found.append((page, argument))
    return found


def _run_group(page, group, capsys):
    """Runs a group as sphinx.ext.doctest does: its blocks in page order in one namespace, a
    ``testcode`` block's printed output checked against the ``testoutput`` block after it,
    a ``doctest`` block's examples against their shown output. Returns how many checks ran."""
    text = (DOCS / page).read_text()
    blocks = sorted((match.start(), match.group("kind"),
                     textwrap.dedent(match.group("body")).strip("\n") + "\n")
                    for match in _DIRECTIVE.finditer(text)
                    if match.group("kind") in _GROUP_KINDS
                    and match.group("argument").strip() == group)
    namespace, checks = {"__name__": "__main__"}, 0
    parser, checker = doctest.DocTestParser(), doctest.OutputChecker()
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    printed = None
    for _, kind, body in blocks:
        if kind == "testcode":
            capsys.readouterr()
            exec(compile(body, f"{page}:{group}", "exec"), namespace)
            printed = capsys.readouterr().out
        elif kind == "testoutput":
            assert printed is not None, f"{page}:{group}: a testoutput without its testcode"
            assert checker.check_output(body, printed, _FLAGS), (
                f"{page}:{group} printed\n{printed}instead of\n{body}")
            printed, checks = None, checks + 1
        else:
            test = parser.get_doctest(body, namespace, f"{page}:{group}", page, 0)
            test.globs = namespace  # get_doctest copies it; the group shares one
            runner.run(test, clear_globs=False)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} examples of {page}:{group} failed"
    return checks + results.attempted


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("page, group", _groups())
def test_every_doctest_group_runs_as_shown(page, group, capsys):
    """What ``sphinx -b doctest`` checks, without Sphinx: every example's output as the page
    shows it (so the model options page's claims: 50 reported epochs ending below 0.2 loss,
    accuracy above 0.97, a resumed Adam at step 600; the estimators' scores; patching
    restored)."""
    assert _run_group(page, group, capsys) >= 1


def test_the_pages_have_the_doctest_groups_ci_relies_on():
    assert set(_groups()) >= {
        ("index.rst", "index"), ("user_guide/original.rst", "dropin"),
        ("user_guide/model_options.rst", "options"), ("user_guide/sklearn.rst", "migration"),
        ("user_guide/sklearn.rst", "networkclassifier"), ("user_guide/sklearn.rst", "patching"),
        ("user_guide/sklearn.rst", "onnx"), ("user_guide/sklearn.rst", "convert"),
        ("user_guide/beyond_sklearn.rst", "beyond"),
        ("user_guide/from_deep_learning.rst", "fromdl")}


def test_the_skorch_and_keras_schedule_is_nnfasts_cosine_schedule():
    """The migration page's ``cosine_factor``, which its skorch and Keras models step once
    per epoch, against nnfast.reference.cosine_rate for the nnfast model's max_iter and
    warmup_fraction, through the warm-up, the cosine and past the end."""
    from nnfast.reference import cosine_rate

    page = "user_guide/from_deep_learning.rst"
    namespace = {}
    exec(_named_code(page, "cosine-factor"), namespace)
    (nnfast_model,) = [body for body in _testcode(page, "fromdl") if "MLPClassifier(" in body]
    max_iter = int(re.search(r"max_iter=(\d+)", nnfast_model).group(1))
    warmup_fraction = float(re.search(r"warmup_fraction=([\d.]+)", nnfast_model).group(1))
    assert (namespace["EPOCHS"], namespace["WARMUP"]) == (max_iter, round(warmup_fraction
                                                                           * max_iter))
    rates = [namespace["cosine_factor"](epoch) for epoch in range(max_iter + 5)]
    expected = [cosine_rate(1.0, epoch, max_iter, round(warmup_fraction * max_iter))
                for epoch in range(max_iter + 5)]
    np.testing.assert_allclose(rates, expected, rtol=1e-15, atol=0)
    for framework in ("skorch-model", "keras-model"):
        assert "cosine_factor(epoch)" in _named_code(page, framework) or (
            "lr_lambda=cosine_factor" in _named_code(page, framework))


def test_the_drop_in_swap_gives_the_original_loops_weights(capsys):
    loop, _, swap, *_ = _testcode("user_guide/original.rst", "dropin")
    assert "for j in range(60000):" in loop and "nnfast.Network([3, 4, 1], seed=1)" in swap
    original_namespace, swapped_namespace = {}, {}
    exec(loop, original_namespace)
    exec(swap, swapped_namespace)
    for name in ("syn0", "syn1"):
        np.testing.assert_allclose(swapped_namespace[name], original_namespace[name],
                                   rtol=0, atol=1e-9)
    printed = capsys.readouterr().out
    assert printed == _testoutput("user_guide/original.rst", "dropin")[0]
    assert "[0.  0.5 1. ]" in printed


def test_the_saving_example_reloads_an_identical_network(capsys):
    _, _, swap, saving = _testcode("user_guide/original.rst", "dropin")
    assert "net.save(path)" in saving
    namespace = {}
    exec(swap, namespace)
    exec(saving, namespace)
    np.testing.assert_array_equal(namespace["same"].predict(namespace["X"]),
                                  namespace["net"].predict(namespace["X"]))


def test_the_mlp_migration_example_matches_scikit_learn(capsys, monkeypatch):
    from threadpoolctl import threadpool_limits

    (migration,) = _testcode("user_guide/sklearn.rst", "migration")
    assert "from nnfast.sklearn import MLPClassifier" in migration
    # One thread for both (nnfast's default follows OMP_NUM_THREADS): on a machine busy with
    # other work, spinning thread pools make these small fits many times slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with threadpool_limits(1):
        exec(migration, {})
        ours = capsys.readouterr().out
        exec(migration.replace("from nnfast.sklearn import MLPClassifier",
                               "from sklearn.neural_network import MLPClassifier"), {})
        theirs = capsys.readouterr().out
    assert ours == _testoutput("user_guide/sklearn.rst", "migration")[0]
    assert abs(float(ours) - float(theirs)) < 0.01 and float(ours) > 0.93


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_dask_examples_train_and_search(capsys):
    """The Dask page's training example (an embedded LocalCluster) and its model search run
    as written; the other blocks there need a real cluster's addresses."""
    training = _named_code("user_guide/dask.rst", "dask-training")
    search = _named_code("user_guide/dask.rst", "dask-search")
    namespace = {"__name__": "__main__"}
    exec(training, namespace)
    net = namespace["net"]
    assert net.iterations_run == 20 and [i for i, _ in net.history] == [0, 5, 10, 15]
    errors = [e for _, e in net.history]
    assert errors[-1] < errors[0]
    exec(search, {"__name__": "__main__"})
    assert "{'networkclassifier__hidden_layer_sizes': (" in capsys.readouterr().out


def _bash_commands(page):
    return [line.strip() for _, _, body in _directives(page, "code-block")
            for line in body.splitlines() if line.strip()]


def test_the_docs_build_commands_are_the_readmes_and_cis():
    commands = [c for c in _bash_commands("development.rst") if "-m sphinx" in c]
    html, doctests = commands
    install, build = html.split(" && ")
    assert install == 'python -m pip install -e ".[docs]"'
    assert build == "python -m sphinx -W --keep-going -b html docs docs/_build/html"
    assert doctests == "python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest"
    readme = (ROOT / "README.md").read_text()
    assert f"```bash\n{html}\n```" in readme
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert build in ci_lines and doctests in ci_lines
    assert any(line.startswith(install.replace("-e", "--quiet -e")) for line in ci_lines)


def test_every_project_file_the_docs_name_exists():
    """Paths such as ``tests/sklearn/test_mlp_equivalence.py`` or ``bench/dask_steps.py``: the
    claims they back are only as good as the files being there."""
    named = set()
    for path in SOURCES + [ROOT / "README.md"]:
        named.update(re.findall(
            r"(?<![\w/.])((?:tests|bench|examples|nnfast|docs|\.ci|\.github)/[\w./-]*\w)",
            path.read_text()))
    named -= {"docs/_build/html", "docs/_build/doctest", "docs/_build/html/index.html",
              "docs/_build", "docs/api/generated", "docs/auto_examples"}
    assert "tests/sklearn/test_mlp_equivalence.py" in named and "bench/dask_steps.py" in named
    # Run against an installed wheel (.ci/test_installed.py) the tree is an sdist's without
    # the package, which is then the installed one; the sdist leaves .github/ out.
    package_root = pathlib.Path(nnfast.__file__).resolve().parent.parent
    if not (ROOT / ".github").exists():
        named = {name for name in named if not name.startswith(".github/")}
    missing = sorted(name for name in named if not (
        (package_root if name.startswith("nnfast/") else ROOT) / name).exists())
    assert not missing, f"the docs name files that do not exist: {missing}"


def _slug(title):
    """The anchor GitHub gives a heading (lower case, punctuation dropped, spaces to '-')."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _headings(path):
    lines = path.read_text().splitlines()
    return [lines[i] for i in range(len(lines) - 1)
            if lines[i].strip() and re.fullmatch(r"([=\-~^])\1{2,}", lines[i + 1].strip())
            and len(lines[i + 1].strip()) >= len(lines[i].strip())]


def test_the_readmes_links_reach_docs_pages_and_sections():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert len(links) >= 9
    for link in links:
        target, _, anchor = link.partition("#")
        assert (ROOT / target).exists(), link
        if anchor:
            assert anchor in [_slug(h) for h in _headings(ROOT / target)], link
    for page in SOURCES:
        relative = page.relative_to(ROOT).as_posix()
        if page.parent.name in ("user_guide",) and page.name != "index.rst":
            assert relative in links, f"the README does not link {relative}"


def test_the_readme_points_at_openblas_thread_timeout_in_one_line():
    """The environment advice for a busy process: one paragraph of the README that names
    the variable and links the section that explains and measures it."""
    readme = (ROOT / "README.md").read_text()
    (paragraph,) = [p for p in readme.split("\n\n") if "OPENBLAS_THREAD_TIMEOUT=4" in p]
    assert "docs/user_guide/performance.rst#threads-in-a-users-process" in paragraph
    performance = (DOCS / "user_guide/performance.rst").read_text()
    assert "Threads in a user's process" in _headings(DOCS / "user_guide/performance.rst")
    assert "OPENBLAS_THREAD_TIMEOUT=4 python" in performance


def test_the_differences_from_scikit_learn_are_documented_in_full():
    """Each deliberate difference that tests/sklearn/test_mlp_equivalence.py and
    tests/sklearn/test_mlp_differential.py rely on has its item under the section's heading."""
    text = (DOCS / "user_guide/sklearn.rst").read_text()
    section = text.split("Differences from scikit-learn\n=============================\n")[1]
    section = section.split("\n=====")[0]
    items = re.findall(r"^- \*\*(.+?)\*\*", section, flags=re.M)
    assert items == [
        "A failed fit changes nothing.",
        "Switching modes under warm start continues the fit.",
        "Missing records start empty.",
        "inf or nan after an overflow.",
        "No",
        "float32 stays float32 under L-BFGS.",
        "Warnings point at your code.",
        "Rounding.",
    ]


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_gallery_example_runs_as_a_script(script, tmp_path, monkeypatch, capsys):
    """What the gallery runs at build time, run here as ``python examples/NAME.py`` would,
    with matplotlib drawing off screen; each example prints what it measured or trained."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)  # loss_curve.py writes its PNG to the working directory
    # The scripts end with plt.show(), which off screen would only warn that it cannot.
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: None)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script)])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    try:
        assert capsys.readouterr().out.strip()
        if script == "loss_curve.py":
            assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert plt.get_fignums(), f"{script} drew no figure"
    finally:
        plt.close("all")
