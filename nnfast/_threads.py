"""Process-wide cap on BLAS threads while fits run.

BLAS's thread count is one setting for the whole process, so concurrent fits share one cap:
the first fit to ask saves BLAS's setting and applies its limit, later ones may lower it, and
the last one to finish restores the saved setting, whatever order the fits end in.

The BLAS libraries are looked up again only when modules were imported since the last
lookup (``_blas_controller``): threadpoolctl finds them by reading the process's memory map,
which costs milliseconds, and a fit or a ``loss_gradient`` call that takes the cap would
otherwise pay that twice per call (an L-BFGS fit makes hundreds of such calls). A BLAS that
arrives later comes with an import (PyTorch's, say), which the count of modules shows.
"""

import sys
import threading

_guard = threading.Lock()
_active = 0
_saved = None  # {library path: its thread count before the first fit}
_current = None
_controller = None
_modules_seen = None  # len(sys.modules) at the last lookup


def _release_blas_control():
    """Lets whichever thread comes next set OpenBLAS's thread count. threadpoolctl >= 3.6
    gives that right to the first thread that uses it and silently ignores any other, but a
    cap taken in one fit's thread may have to be lowered or restored in another's; every
    change made here is serialised by _guard, so the process-wide setting stays consistent."""
    import threadpoolctl

    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None),
                    "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


def _blas_controller():
    """threadpoolctl's controller of the process's BLAS libraries, looked up anew only
    after an import."""
    global _controller, _modules_seen
    if _controller is None or len(sys.modules) != _modules_seen:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(user_api="blas")
        _modules_seen = len(sys.modules)
    return _controller


class blas_thread_cap:
    """Context manager: BLAS uses at most ``limit`` threads inside; None changes nothing."""

    def __init__(self, limit):
        self.limit = limit

    def __enter__(self):
        global _active, _saved, _current
        if self.limit is None:
            return self
        with _guard:
            controller = _blas_controller()
            if _active == 0:
                _saved, _current = {}, self.limit
            else:
                _current = min(_current, self.limit)
            # Libraries found since the cap was taken are saved before they are limited.
            for info in controller.info():
                _saved.setdefault(info["filepath"], info["num_threads"])
            _release_blas_control()
            controller.limit(limits=_current)
            _release_blas_control()
            _active += 1
        return self

    def __exit__(self, *exc_info):
        global _active, _saved, _current
        if self.limit is None:
            return False
        with _guard:
            _active -= 1
            if _active == 0:
                controller = _blas_controller()
                _release_blas_control()
                for library in controller.lib_controllers:
                    if library.filepath in _saved:
                        library.set_num_threads(_saved[library.filepath])
                _release_blas_control()
                _saved = _current = None
        return False
