"""``python -m nnfast.sklearn script.py [args]`` (or ``-m module [args]``): runs a script or
module with scikit-learn's MLP estimators patched to nnfast's (``nnfast.sklearn.patch_sklearn``).

The script runs as ``python script.py [args]`` would run it: as ``__main__``, with
``sys.argv == ["script.py", *args]``, its directory first on ``sys.path``, and the same exit
status (``sys.exit``'s, or 1 after an uncaught exception's traceback, which starts at the
script's own frame and goes through ``sys.excepthook``). ``-m module`` runs as ``python -m
module`` does, with the current directory first on ``sys.path``.
"""

import os
import runpy
import sys

from ._patch import patch_sklearn

USAGE = """\
usage: python -m nnfast.sklearn script.py [args ...]
       python -m nnfast.sklearn -m module [args ...]

Runs a Python script or module with sklearn.neural_network.MLPClassifier / MLPRegressor
replaced by nnfast's (nnfast.sklearn.patch_sklearn() before the script starts)."""


def _run(target, module):
    if module:
        # As python -m: run_module sets sys.argv[0] to the module's file and puts the module
        # in sys.modules["__main__"] while it runs; sys.path[0] is already the current
        # directory (python -m nnfast.sklearn put it there).
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        # python script.py puts the script's directory first on sys.path (where python -m
        # nnfast.sklearn put the current directory); a directory or zip archive with a
        # __main__.py is added by run_path itself, as python does.
        if os.path.isfile(target):
            sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")


def main(argv=None):
    """Runs ``argv`` (default ``sys.argv[1:]``) patched; returns the exit status when the
    script ends normally (``SystemExit`` from the script propagates as it would)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    module = argv[0] == "-m"
    if module and len(argv) < 2:
        print("python -m nnfast.sklearn: -m needs a module name\n\n" + USAGE, file=sys.stderr)
        return 2
    target, args = (argv[1], argv[2:]) if module else (argv[0], argv[1:])
    if not module and not os.path.exists(target):
        print(f"python -m nnfast.sklearn: can't open file {target!r}: "
              "No such file or directory", file=sys.stderr)
        return 2
    patch_sklearn()
    sys.argv = [target, *args]
    try:
        _run(target, module)
    except Exception:
        # An uncaught exception: report it as python would, from the script's own frames
        # (this module's and runpy's are not the user's), then exit with status 1.
        kind, value, tb = sys.exc_info()
        while tb is not None and (tb.tb_frame.f_code.co_filename == __file__
                                  or tb.tb_frame.f_globals.get("__name__") == "runpy"):
            tb = tb.tb_next
        # The default hook prints the exception's own __traceback__, whatever tb it is given.
        sys.excepthook(kind, value.with_traceback(tb), tb)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
