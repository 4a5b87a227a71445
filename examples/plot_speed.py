"""
Speed, measured while these pages were built
============================================

Times a few small fits side by side with ``time.perf_counter``: the tutorial's 3-layer
network by the original NumPy program (the loop of :doc:`/user_guide/original`) and by
nnfast's compiled kernel, and scikit-learn's ``MLPClassifier`` against nnfast's on
scikit-learn's digits (10 epochs of Adam, the same fit on both sides). The runs are
interleaved, and each bar is the median of five.

**These numbers were measured on the machine that built this documentation**, whatever it
was doing at the time, and they change from build to build. The fits are kept short so that
the build stays quick, and each time includes the fit's fixed costs. The
:doc:`/user_guide/performance` page has the project's benchmarks: longer runs, and the
machines they were measured on.
"""

import os
import platform
import statistics
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SklearnMLP
from sklearn.preprocessing import StandardScaler

import nnfast
from nnfast.sklearn import MLPClassifier

REPEATS = 5

tutorial_X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=float)
tutorial_y = np.array([[0, 1, 1, 0]], dtype=float).T
digits_X, digits_y = load_digits(return_X_y=True)
digits_X = StandardScaler().fit_transform(digits_X)


TUTORIAL_ITERATIONS = 5_000


def original_fit():
    """The original program's loop, as published, from the same initial weights."""
    def nonlin(x, deriv=False):
        if deriv:
            return x * (1 - x)
        return 1 / (1 + np.exp(-x))

    np.random.seed(1)
    syn0 = 2 * np.random.random((3, 4)) - 1
    syn1 = 2 * np.random.random((4, 1)) - 1
    for _ in range(TUTORIAL_ITERATIONS):
        l1 = nonlin(np.dot(tutorial_X, syn0))
        l2 = nonlin(np.dot(l1, syn1))
        l2_delta = (tutorial_y - l2) * nonlin(l2, deriv=True)
        l1_delta = l2_delta.dot(syn1.T) * nonlin(l1, deriv=True)
        syn1 += l1.T.dot(l2_delta)
        syn0 += tutorial_X.T.dot(l1_delta)
    return syn0, syn1


def nnfast_fit():
    return nnfast.Network([3, 4, 1], seed=1).fit(tutorial_X, tutorial_y,
                                                 iterations=TUTORIAL_ITERATIONS)


def digits_fit(estimator):
    return lambda: estimator(max_iter=10, random_state=0).fit(digits_X, digits_y)


workloads = {
    "tutorial [3, 4, 1]\n5,000 iterations": {
        "original NumPy": original_fit, "nnfast": nnfast_fit},
    "MLPClassifier, digits\n10 epochs of Adam": {
        "scikit-learn": digits_fit(SklearnMLP), "nnfast": digits_fit(MLPClassifier)},
}

times = {(workload, name): [] for workload, fits in workloads.items() for name in fits}
with warnings.catch_warnings():
    # 10 epochs stop before the stopping rule does, on purpose: both estimators warn.
    warnings.simplefilter("ignore", ConvergenceWarning)
    for fits in workloads.values():  # one untimed warm-up of each
        for fit in fits.values():
            fit()
    for _ in range(REPEATS):
        for workload, fits in workloads.items():
            for name, fit in fits.items():
                start = time.perf_counter()
                fit()
                times[workload, name].append(time.perf_counter() - start)
medians = {key: 1e3 * statistics.median(values) for key, values in times.items()}

for (workload, name), ms in medians.items():
    print(f"{workload.splitlines()[0]:<24} {name:<15} {ms:9.2f} ms per fit")


def cpu_name():
    """The CPU's model name where the system says it (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# %%
# Milliseconds per fit, the baseline above nnfast in each panel; the title says how many
# times faster nnfast was.

figure, panels = plt.subplots(1, len(workloads), figsize=(8, 3.2))
for panel, (workload, fits) in zip(panels, workloads.items()):
    names = list(fits)
    values = [medians[workload, name] for name in names]
    panel.barh(names, values, color=["tab:gray", "tab:blue"])
    for row, value in enumerate(values):
        panel.text(value, row, f" {value:.1f}", va="center")
    panel.set_xlim(0, 1.3 * max(values))
    panel.invert_yaxis()
    panel.set_xlabel("ms per fit (median)")
    panel.set_title(f"{workload}\nnnfast {values[0] / values[1]:.1f}x faster", fontsize=10)
figure.suptitle(f"Measured on the machine that built these docs: {cpu_name()}, "
                f"{os.cpu_count()} logical cores", fontsize=9)
figure.tight_layout()
plt.show()
