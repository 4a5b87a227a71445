"""``patch_sklearn()`` / ``unpatch_sklearn()``: nnfast's MLP estimators in place of
scikit-learn's, for code that imports scikit-learn's names.

Python resolves ``from sklearn.neural_network import MLPClassifier`` by reading the attribute
``MLPClassifier`` of the module object ``sklearn.neural_network`` when the import statement
runs. Patching rebinds that attribute, in the public package and in the private module that
defines the class (``sklearn.neural_network._multilayer_perceptron``, which some libraries
import from), to nnfast's class; unpatching binds back the very objects found there before.
Nothing else changes: scikit-learn's classes are not modified, and nnfast's keep their own
``__module__`` (``nnfast.sklearn._mlp``), so ``repr``, ``clone`` and ``pickle`` behave as for an
estimator imported from ``nnfast.sklearn``, and a pickle made while patched loads without
patching.

The limit follows from the mechanism: a name bound *before* patching keeps the class it was
bound to. A module that ran ``from sklearn.neural_network import MLPClassifier`` before
``patch_sklearn()`` still holds scikit-learn's class (and one that imported while patched keeps
nnfast's after ``unpatch_sklearn()``). So patch first, then import the code to be patched;
``python -m nnfast.sklearn script.py`` does that for a whole script. Child processes (joblib's
process workers, multiprocessing) start unpatched: estimators sent to them are nnfast's, since
a pickle names its class's module, but a child that imports scikit-learn's name itself gets
scikit-learn's unless it calls ``patch_sklearn()``.
"""

import importlib
import threading

__all__ = ["is_patched", "patch_sklearn", "unpatch_sklearn"]

# The modules whose attributes are rebound: the public package and the private module that
# defines the classes (imported from directly by some libraries, and by the package itself).
_MODULES = ("sklearn.neural_network", "sklearn.neural_network._multilayer_perceptron")
_NAMES = ("MLPClassifier", "MLPRegressor")

# Serialises patch / unpatch, so that two threads patching at once record scikit-learn's own
# classes as the originals (never nnfast's) and unpatching restores them exactly once.
_lock = threading.Lock()
# While patched: {(module name, attribute name): the object bound there before patching}.
_originals = None


def _replacements():
    from ._mlp import MLPClassifier, MLPRegressor

    return {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}


def patch_sklearn():
    """Makes ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor`` nnfast's estimators.

    Afterwards ``from sklearn.neural_network import MLPClassifier`` (or from
    ``sklearn.neural_network._multilayer_perceptron``) gives ``nnfast.sklearn.MLPClassifier``,
    and likewise for ``MLPRegressor``. Calling it again while patched does nothing. Only
    imports run after the call see nnfast's classes: patch before importing the code that
    should use them.
    """
    global _originals
    replacements = _replacements()
    with _lock:
        if _originals is not None:
            return
        modules = [importlib.import_module(name) for name in _MODULES]
        originals = {(module.__name__, name): getattr(module, name)
                     for module in modules for name in _NAMES}
        for module in modules:
            for name in _NAMES:
                setattr(module, name, replacements[name])
        _originals = originals


def unpatch_sklearn():
    """Binds scikit-learn's own classes back where ``patch_sklearn`` replaced them.

    Does nothing when not patched. Names imported while patched keep nnfast's classes.
    """
    global _originals
    with _lock:
        if _originals is None:
            return
        for (module_name, name), original in _originals.items():
            setattr(importlib.import_module(module_name), name, original)
        _originals = None


def is_patched():
    """Whether ``patch_sklearn`` is in effect (and not undone by ``unpatch_sklearn``)."""
    return _originals is not None
