"""
The same fit as scikit-learn's MLP
==================================

``nnfast.sklearn.MLPClassifier`` takes scikit-learn's parameters and, for the same
``random_state``, draws the same initial weights and visits the rows in the same order, so
it computes scikit-learn's fit. Here both train on scikit-learn's digits for 20 epochs with
Adam, and their loss curves are drawn on top of each other; the second panel shows how far
apart the two curves are, epoch by epoch.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SklearnMLP
from sklearn.preprocessing import StandardScaler

from nnfast.sklearn import MLPClassifier

X, y = load_digits(return_X_y=True)
X = StandardScaler().fit_transform(X)

params = dict(hidden_layer_sizes=(64,), max_iter=20, random_state=0)
with warnings.catch_warnings():
    # 20 epochs stop short of convergence on purpose: both fits warn about it.
    warnings.simplefilter("ignore", ConvergenceWarning)
    ours = MLPClassifier(**params).fit(X, y)
    theirs = SklearnMLP(**params).fit(X, y)

weight_gap = max(np.abs(a - b).max() for a, b in zip(ours.coefs_, theirs.coefs_))
print(f"largest difference between the two fits' weights: {weight_gap:.1e}")
print(f"training accuracy: nnfast {ours.score(X, y):.4f}, scikit-learn {theirs.score(X, y):.4f}")

# %%
# The loss curves (``loss_curve_``) of the two fits, and their relative difference.

epochs = np.arange(1, ours.n_iter_ + 1)
ours_curve, theirs_curve = np.array(ours.loss_curve_), np.array(theirs.loss_curve_)
figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
top.plot(epochs, theirs_curve, linewidth=4, alpha=0.4, label="scikit-learn")
top.plot(epochs, ours_curve, linestyle="--", color="black", label="nnfast")
top.set_ylabel("training loss")
top.set_yscale("log")
top.legend()
# Equal curves would have no points on a log scale: the floor keeps them visible.
gap = np.maximum(np.abs(ours_curve - theirs_curve) / theirs_curve, 1e-17)
bottom.semilogy(epochs, gap, marker="o")
bottom.set_xlabel("epoch")
bottom.set_ylabel("relative difference")
figure.suptitle("MLPClassifier on digits, 20 epochs of Adam")
figure.tight_layout()
plt.show()
