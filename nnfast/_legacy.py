"""Where the modules of nnfast 0.1.0 live now, so that what users pickled with it loads.

A pickle names the module of each class it holds (``nnfast._mlp.MLPClassifier``,
``nnfast._plan.OptimizerState``, ...). Those modules moved into subpackages; this finder,
installed by ``import nnfast``, answers an import of an old name with the module that now
holds the same classes, registered under the old name too. Nothing is imported until asked:
``nnfast._mlp`` needs scikit-learn, which ``import nnfast`` must not.
"""

import importlib
import importlib.abc
import importlib.util
import sys

# 0.1.0's module name -> today's. Only names a pickle can hold (modules defining a class
# or function that pickles reference by name) need to be here.
MOVED = {
    "nnfast._mlp": "nnfast.sklearn._mlp",
    "nnfast._mlp_params": "nnfast.sklearn._params",
    "nnfast._mlp_input": "nnfast.sklearn._input",
    "nnfast._mlp_solvers": "nnfast.sklearn._solvers",
    "nnfast._plan": "nnfast._training.plan",
    "nnfast._layout": "nnfast._training.layout",
    "nnfast._dask_tasks": "nnfast.dask._tasks",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        """The module was executed under its own name by ``create_module``."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds 0.1.0's module names (``MOVED``) as the modules that replaced them."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(MOVED[fullname]))


def install():
    """Puts the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
