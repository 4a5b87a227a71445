"""The command line: the main job (python -m nnfast) and the bench command."""

import subprocess
import sys

import numpy as np
import pytest

from nnfast import __main__ as cli
from nnfast import bench


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

    from nnfast import workloads

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
    from nnfast import bench_mlp

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
