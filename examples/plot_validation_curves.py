"""
Validation curves: GELU and ReLU, with and without dropout
==========================================================

Four networks with two hidden layers of 128 units learn scikit-learn's digits from 30% of
its rows, for 30 epochs of Adam without an L2 penalty: ReLU or GELU units, each without
dropout and with ``dropout=0.3``. Each fit is given the same validation rows, the other
70% (``fit(..., X_val=..., y_val=...)``), and with ``scoring="neg_log_loss"`` records
after every epoch the validation rows' log-loss (``validation_loss_curve_``) and their
score (``validation_scores_``: here minus that log-loss, so that greater is better).
Without ``early_stopping`` the validation data are only scored: every fit trains for all
30 epochs, exactly as it would without them.

On these few training rows, dropout gives both activations a lower validation loss. Each
printed line also gives the epoch of the fit's lowest validation loss, the epoch whose
weights ``early_stopping=True`` on the same validation rows looks for.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from nnfast.sklearn import MLPClassifier

X, y = load_digits(return_X_y=True)
X = StandardScaler().fit_transform(X)
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.7, random_state=0,
                                                  stratify=y)

figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(9, 3.8))
for activation, color in (("relu", "tab:blue"), ("gelu", "tab:orange")):
    for dropout, style in ((0.0, "--"), (0.3, "-")):
        model = MLPClassifier(hidden_layer_sizes=(128, 128), activation=activation,
                              dropout=dropout, alpha=0.0, learning_rate_init=3e-3,
                              max_iter=30, scoring="neg_log_loss", random_state=0)
        with warnings.catch_warnings():
            # 30 epochs stop short of convergence on purpose.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_train, y_train, X_val=X_val, y_val=y_val)
        losses = np.array(model.validation_loss_curve_)
        epochs = np.arange(1, len(losses) + 1)
        label = f"{activation}, dropout={dropout}"
        print(f"{label:<20} lowest validation loss {losses.min():.4f} at epoch "
              f"{losses.argmin() + 1}, last {losses[-1]:.4f}, "
              f"validation accuracy {model.score(X_val, y_val):.3f}")
        loss_axes.plot(epochs, losses, style, color=color, label=label)
        score_axes.plot(epochs, model.validation_scores_, style, color=color, label=label)

loss_axes.set_xlabel("epoch")
loss_axes.set_ylabel("validation log-loss (validation_loss_curve_)")
loss_axes.set_yscale("log")
loss_axes.legend()
score_axes.set_xlabel("epoch")
score_axes.set_ylabel("validation_scores_ (neg_log_loss)")
score_axes.set_ylim(-0.5, 0)
figure.tight_layout()
plt.show()
