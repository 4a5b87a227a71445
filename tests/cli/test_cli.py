"""The command line: the main job (python -m nnfast) and the bench command."""

import subprocess
import sys
import time

import numpy as np
import pytest

from nnfast import __main__ as cli
from nnfast.cli import bench


def test_main_job_shows_both_programs_with_both_backends_agreeing(capsys):
    assert cli.main([]) == 0  # non-zero when the backends disagree by more than 1e-9
    out = capsys.readouterr().out
    assert "2-layer network [3, 1], 10,000 iterations" in out
    assert "3-layer network [3, 4, 1], 60,000 iterations" in out
    differences = [float(line.rsplit(":", 1)[1])
                   for line in out.splitlines() if "largest weight difference" in line]
    assert len(differences) == 2 and max(differences) <= 1e-9
    assert out.count("faster") == 2


def test_bench_prints_a_table_and_writes_a_chart(tmp_path, capsys):
    chart = tmp_path / "speedup.png"
    assert cli.main(["bench", "--workload", "tutorial2", "--dtype", "float32", "--repeats", "1",
                     "--no-torch", "--plot", str(chart)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| tutorial2 |")]
    assert len(rows) == 1 and "float32" in rows[0]
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    numpy_us, nnfast_us, speedup = float(cells[3]), float(cells[4]), float(cells[5][:-1])
    assert speedup == pytest.approx(numpy_us / nnfast_us, rel=0.05)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["bench", "--workload", "nope"], ["bench", "--repeats", "0"],
                                  ["bench", "--pipeline", "--threads", "2"],
                                  ["bench", "--pipeline", "--plot", "x.png"],
                                  ["bench", "--blas-seconds", "0.1"],
                                  ["bench", "--pipeline", "--blas-seconds", "0"],
                                  ["frobnicate"]])
def test_bad_command_lines_fail_with_a_message(argv):
    result = subprocess.run([sys.executable, "-m", "nnfast", *argv], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip()


def test_bench_table_format_lists_every_row():
    rows = [{"workload": "small", "dtype": "float64", "threads": 2,
             "us_per_iteration": {"numpy": 20.0, "nnfast": 4.0}, "speedup": 5.0,
             "speedup_vs_torch": None, "max_weight_difference": 1e-14}]
    table = bench.format_table(rows)
    assert "| small | float64 | 2 | 20.00 | 4.000 | 5.0x | 1.0e-14 |" in table


def test_bench_times_the_mlp_against_scikit_learn_on_the_same_fit(capsys):
    assert cli.main(["bench", "--workload", "iris-adam", "--dtype", "float64", "--repeats",
                     "1", "--no-torch"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| iris-adam |")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    sklearn_ms, nnfast_ms, speedup = (float(cells[3].replace(",", "")),
                                      float(cells[4].replace(",", "")), float(cells[5][:-1]))
    assert speedup == pytest.approx(sklearn_ms / nnfast_ms, rel=0.05)
    # Same initial weights, row orders and arithmetic: the same fit, to rounding.
    assert float(cells[-1]) < 1e-9
    assert not any(line.startswith("| tutorial") for line in out.splitlines())


@pytest.mark.parametrize("name", ["tfidf-sparse-adam", "onehot-sparse-adam"])
def test_bench_sparse_rows_time_and_measure_both_on_the_same_sparse_fit(name, capsys,
                                                                       monkeypatch):
    """The sparse MLP rows (shrunk here: 400 x 1,000, 2 epochs): a CSR matrix of about
    per_row non-zeros a row, the same fit in both (float64), and each one's peak memory."""
    import dataclasses

    import scipy.sparse as sp

    from nnfast.cli.bench import workloads

    small = dataclasses.replace(workloads.MLP_WORKLOADS[name], rows=400, features=1_000,
                                max_iter=2)
    monkeypatch.setitem(workloads.MLP_WORKLOADS, name, small)
    X, y = small.data(np.float32)
    assert sp.issparse(X) and X.format == "csr" and X.dtype == np.float32
    assert 0.6 * small.per_row <= X.nnz / X.shape[0] <= small.per_row
    assert cli.main(["bench", "--workload", name, "--dtype", "float64", "--repeats", "1",
                     "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert "peak MiB" in out
    rows = [line for line in out.splitlines() if line.startswith(f"| {name} |")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert float(cells[6]) > 0 and float(cells[7]) > 0  # peak MiB, scikit-learn's and ours
    assert float(cells[-1]) < 1e-9


def test_bench_mlp_table_format_lists_every_row():
    from nnfast.cli.bench import mlp as bench_mlp

    rows = [{"workload": "digits-adam", "dtype": "float32", "threads": 2,
             "seconds_per_fit": {"sklearn": 1.5, "nnfast": 0.25, "torch": 0.75},
             "speedup": 6.0, "speedup_vs_torch": 3.0, "max_weight_difference": 2e-8},
            {"workload": "digits-lbfgs", "dtype": "float32", "threads": 2,
             "seconds_per_fit": {"sklearn": 1.0, "nnfast": 0.5}, "speedup": 2.0,
             "speedup_vs_torch": None, "max_weight_difference": 1e-8}]
    table = bench_mlp.format_table(rows)
    assert "| digits-adam | float32 | 2 | 1,500.0 | 250.00 | 6.0x | 750.0 | 3.0x | 2.0e-08 |" \
        in table
    assert "| digits-lbfgs | float32 | 2 | 1,000.0 | 500.00 | 2.0x | - | - | 1.0e-08 |" in table


# --- python -m nnfast bench --pipeline (nnfast/bench_pipeline.py, nnfast/bench_jax.py) ---------

def _table_rows(out, first_cell):
    """The cells of every Markdown table line whose first cell is first_cell."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in out.splitlines() if line.startswith(f"| {first_cell} |")]


@pytest.fixture
def shrunk_bench(monkeypatch):
    """The bench's workloads and pauses cut down so that its modes run in seconds: the settle
    pause to 10 ms, "small" to 50 iterations, iris-adam to 3 epochs, digits-sgd to 300 rows
    (a full batch of 200 and a partial one of 100) and 3 epochs, the end-to-end workflows to
    240 digits, 3 epochs, 3 folds and a stream of 10 batches."""
    import dataclasses

    from nnfast.cli.bench import pipeline as bench_pipeline, workloads

    monkeypatch.setattr(bench, "_SETTLE_SECONDS", 0.01)
    monkeypatch.setitem(workloads.WORKLOADS, "small",
                        dataclasses.replace(workloads.WORKLOADS["small"], iterations=50))
    monkeypatch.setitem(workloads.MLP_WORKLOADS, "iris-adam",
                        dataclasses.replace(workloads.MLP_WORKLOADS["iris-adam"], max_iter=3))
    monkeypatch.setitem(workloads.MLP_WORKLOADS, "digits-sgd",
                        dataclasses.replace(workloads.MLP_WORKLOADS["digits-sgd"], rows=300,
                                            max_iter=3))
    for name, case in list(bench_pipeline.END_TO_END.items()):
        monkeypatch.setitem(bench_pipeline.END_TO_END, name,
                            dataclasses.replace(case, rows=240, max_iter=3, cv=3, batches=10,
                                                batch_rows=20))
    return workloads


def _jax_importable():
    from nnfast.cli.bench import jax as bench_jax
    return bench_jax.jax_available()


def _assert_printed_ratio(cell, numerator_ms, denominator_ms):
    """A printed ratio ("1.60x") agrees with the printed milliseconds it divides, within what
    rounding both to two decimals can move it (sub-millisecond times move it most)."""
    ratio, half_ms, half_ratio = float(cell[:-1]), 0.005, 0.005
    low = (numerator_ms - half_ms) / (denominator_ms + half_ms) - half_ratio
    high = (numerator_ms + half_ms) / max(denominator_ms - half_ms, 1e-12) + half_ratio
    assert low <= ratio <= high, (cell, numerator_ms, denominator_ms)


def test_bench_pipeline_times_every_row_quiet_after_blas_and_at_one_thread(shrunk_bench,
                                                                          capsys):
    assert cli.main(["bench", "--pipeline", "--workload", "small", "--workload", "iris-adam",
                     "--dtype", "float64", "--repeats", "1", "--no-torch",
                     "--blas-seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "CPU flags:" in out and "Versions:" in out and "Thread pools:" in out
    assert "dtypes: float64" in out
    network, mlp = _table_rows(out, "small"), _table_rows(out, "iris-adam")
    # nnfast's table, then its peers' (the NumPy original / scikit-learn, JAX if importable).
    assert len(network) == 2
    assert len(mlp) == 2 + _jax_importable()
    for cells in (network[0], mlp[0]):
        quiet, after_blas, one_thread_after_blas = (float(cells[i].replace(",", ""))
                                                 for i in (3, 4, 7))
        _assert_printed_ratio(cells[5], after_blas, quiet)
        _assert_printed_ratio(cells[9], after_blas, one_thread_after_blas)
        assert float(cells[-1]) < 1e-9  # the same fit as the reference
    assert float(mlp[0][10]) > 0  # after a scikit-learn fit
    peers = {cells[2]: cells for cells in network[1:] + mlp[1:]}
    assert peers["NumPy original"][-1] == "reference"
    assert peers["scikit-learn"][-1] == "reference"
    assert peers["scikit-learn"][5] == "-"  # scikit-learn is not timed after itself
    if _jax_importable():
        assert float(peers["JAX (jit loop)"][9]) > 0  # compile seconds
        assert float(peers["JAX (jit loop)"][-1]) < 1e-9


def test_bench_pipeline_row_has_every_runner_and_condition_and_the_same_fits(shrunk_bench):
    """run_row's result: a median per (runner, condition), nnfast at both thread counts and
    JAX (where importable) the same fit as scikit-learn's, a partial batch included."""
    from nnfast.cli.bench import pipeline as bp

    row = bp.run_row("mlp", "digits-sgd", np.float64, repeats=1, with_torch=False,
                     blas_seconds=0.01)
    every = {bp.QUIET, bp.AFTER_BLAS, bp.AFTER_SKLEARN}
    assert set(row["seconds"][bp.NNFAST]) == every
    assert set(row["seconds"][bp.NNFAST_1]) == every
    assert set(row["seconds"]["sklearn"]) == {bp.QUIET, bp.AFTER_BLAS}
    assert all(t > 0 for times in row["seconds"].values() for t in times.values())
    expected = {bp.NNFAST, bp.NNFAST_1} | ({"jax"} if _jax_importable() else set())
    assert set(row["max_weight_difference"]) == expected
    assert max(row["max_weight_difference"].values()) < 1e-9
    assert ("jax" in row["compile_seconds"]) == _jax_importable()


def test_other_blas_work_runs_for_about_the_time_asked():
    from nnfast.cli.bench import pipeline as bench_pipeline

    bench_pipeline.other_blas_work(0.001)  # the operands are made on the first call
    start = time.perf_counter()
    bench_pipeline.other_blas_work(0.05)
    assert time.perf_counter() - start >= 0.05


def test_bench_end_to_end_rows_run_both_libraries_to_the_same_scores(shrunk_bench, capsys):
    from nnfast.cli.bench import pipeline as bench_pipeline

    # grid-digits-jobs1 is the next test's (the same search as jobs2's, in this process).
    names = [name for name in bench_pipeline.END_TO_END if name != "grid-digits-jobs1"]
    argv = ["bench", "--repeats", "1"]
    for name in names:
        argv += ["--workload", name]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for name in names:
        (cells,) = _table_rows(out, name)
        sklearn_s, nnfast_s, speedup = float(cells[2]), float(cells[3]), float(cells[4][:-1])
        assert speedup == pytest.approx(sklearn_s / nnfast_s, rel=0.05, abs=0.01)
        assert cells[5] == cells[6]  # mean scores
        assert float(cells[7]) <= 1e-12


def test_end_to_end_scores_are_each_librarys_own_and_agree(shrunk_bench):
    """The scores the table compares come from each library's estimator (grid: one mean test
    score per candidate; stream: one accuracy per tenth of its batches)."""
    from nnfast.cli.bench import pipeline as bench_pipeline

    case = bench_pipeline.END_TO_END["grid-digits-jobs1"]
    _, sklearn_scores = bench_pipeline.run_end_to_end(case, "sklearn")
    _, nnfast_scores = bench_pipeline.run_end_to_end(case, "nnfast")
    assert sklearn_scores.shape == (4,) and ((0 <= sklearn_scores) & (sklearn_scores <= 1)).all()
    assert len(set(sklearn_scores)) > 1  # one score per candidate, not one repeated
    np.testing.assert_allclose(nnfast_scores, sklearn_scores, rtol=0, atol=1e-12)
    stream = bench_pipeline.END_TO_END["partial-fit-digits"]
    _, stream_scores = bench_pipeline.run_end_to_end(stream, "nnfast")
    assert stream_scores.shape == (10,)
    assert stream_scores[-1] > stream_scores[0]  # the stream's model learns as it goes


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver_workload", ["iris-adam", "digits-sgd"])
def test_jax_peer_model_run_on_numpy_is_scikit_learns_fit(solver_workload, shrunk_bench,
                                                          dtype):
    """The JAX peer's model and whole-loop structure (make_train: fori_loop over epochs, scan
    over full batches, then the partial one) run on NumPy with Python loops, without JAX,
    against scikit-learn's fit from the same seed: the same weights to rounding (float32: to
    scikit-learn's float64 Adam step size)."""
    from sklearn.neural_network import MLPClassifier

    from nnfast.cli.bench import jax as bench_jax

    workload = shrunk_bench.MLP_WORKLOADS[solver_workload]
    assert bench_jax.supports(workload)
    coefs, intercepts = bench_jax.fit_numpy(workload, dtype, workload.max_iter)
    X, y = workload.data(dtype)
    reference = MLPClassifier(**workload.params()).fit(X, y)
    tolerance = {np.float32: 1e-6, np.float64: 1e-12}[dtype]
    for ours, theirs in zip(coefs + intercepts, reference.coefs_ + reference.intercepts_):
        assert ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=tolerance)


def test_jax_peer_skips_models_it_does_not_have():
    from nnfast.cli.bench import jax as bench_jax
    from nnfast.cli.bench.workloads import MLP_WORKLOADS

    assert not bench_jax.supports(MLP_WORKLOADS["digits-lbfgs"])
    assert not bench_jax.supports(MLP_WORKLOADS["tfidf-sparse-adam"])
    assert bench_jax.fit(MLP_WORKLOADS["digits-lbfgs"], np.float64, None, 1) is None
    assert bench_jax.batch_layout(1797) == (200, 8, 197)
    assert bench_jax.batch_layout(150) == (150, 1, 0)


def test_bench_pipeline_tables_format_every_row():
    from nnfast.cli.bench import pipeline as bp

    seconds = {bp.NNFAST: {bp.QUIET: 0.010, bp.AFTER_BLAS: 0.020, bp.AFTER_SKLEARN: 0.030},
               bp.NNFAST_1: {bp.QUIET: 0.016, bp.AFTER_BLAS: 0.016, bp.AFTER_SKLEARN: 0.016},
               "sklearn": {bp.QUIET: 0.100, bp.AFTER_BLAS: 0.120},
               "jax": {bp.QUIET: 0.040, bp.AFTER_BLAS: 0.050, bp.AFTER_SKLEARN: 0.060}}
    row = {"kind": "mlp", "workload": "digits-adam", "dtype": "float32", "threads": 2,
           "reference": "sklearn", "seconds": seconds, "compile_seconds": {"jax": 0.5},
           "max_weight_difference": {bp.NNFAST: 1e-8, bp.NNFAST_1: 1e-8, "jax": 2e-8}}
    table = bp.format_nnfast_table([row])
    assert ("| digits-adam | float32 | 2 | 10.00 | 20.00 | 2.00x | 16.00 | 16.00 | 0.62x | "
            "1.25x | 30.00 | 3.00x | 16.00 | 1.0e-08 |") in table
    peers = bp.format_peer_table([row])
    assert ("| digits-adam | float32 | scikit-learn | 100.00 | 120.00 | - | 10.00x | 6.00x | - "
            "| - | reference |") in peers
    assert ("| digits-adam | float32 | JAX (jit loop) | 40.00 | 50.00 | 60.00 | 4.00x | 2.50x "
            "| 2.00x | 0.50 | 2.0e-08 |") in peers


def test_cpu_flags_name_what_proc_cpuinfo_lists():
    from nnfast.cli.bench import pipeline as bench_pipeline

    flags = bench_pipeline.cpu_flags()
    try:
        with open("/proc/cpuinfo") as handle:
            text = handle.read()
    except OSError:
        assert flags == "unknown"
        return
    assert ("AVX2" in flags) == (" avx2 " in text.replace("\n", " "))
    assert ("AVX-512F" in flags) == (" avx512f " in text.replace("\n", " "))


def _pool(api, architecture, path="/site-packages/scipy.libs/libscipy_openblas-x.so"):
    return {"user_api": "blas", "internal_api": api, "num_threads": 2, "filepath": path,
            "version": "0.3.30", "architecture": architecture}


@pytest.mark.parametrize("pools, runs_avx512, named", [
    ([_pool("openblas", "Haswell")], True, ["libscipy_openblas-x.so (Haswell)"]),
    ([_pool("openblas", "SkylakeX"), _pool("openblas", "Zen", "/n/libscipy_openblas64_-y.so")],
     True, ["libscipy_openblas64_-y.so (Zen)"]),
    ([_pool("openblas", "Haswell")], False, None),
    ([_pool("openblas", "SkylakeX"), _pool("openblas", "cooperlake")], True, None),
    ([_pool("mkl", "Haswell"), _pool("openmp", None)], True, None),
])
def test_the_header_says_when_openblas_runs_no_avx512_kernels_on_an_avx512_cpu(
        pools, runs_avx512, named):
    from nnfast.cli.bench import pipeline as bench_pipeline

    advice = bench_pipeline.blas_core_advice(pools, runs_avx512)
    if named is None:
        assert advice is None
    else:
        assert "OPENBLAS_CORETYPE=SkylakeX" in advice
        assert all(library in advice for library in named)
        assert "SkylakeX)" not in advice  # a library on AVX-512 kernels is not named
