"""Process-wide cap on BLAS threads while fits run.

BLAS's thread count is one setting for the whole process, so concurrent fits share one cap:
the first fit to ask saves BLAS's setting and applies its limit, later ones may lower it, and
the last one to finish restores the saved setting, whatever order the fits end in.
"""

import threading

_guard = threading.Lock()
_active = 0
_saved = None  # {library path: its thread count before the first fit}
_current = None


class blas_thread_cap:
    """Context manager: BLAS uses at most ``limit`` threads inside; None changes nothing."""

    def __init__(self, limit):
        self.limit = limit

    def __enter__(self):
        global _active, _saved, _current
        if self.limit is None:
            return self
        from threadpoolctl import ThreadpoolController

        with _guard:
            controller = ThreadpoolController().select(user_api="blas")
            if _active == 0:
                _saved = {info["filepath"]: info["num_threads"] for info in controller.info()}
                _current = self.limit
            else:
                _current = min(_current, self.limit)
            controller.limit(limits=_current)
            _active += 1
        return self

    def __exit__(self, *exc_info):
        global _active, _saved, _current
        if self.limit is None:
            return False
        from threadpoolctl import ThreadpoolController

        with _guard:
            _active -= 1
            if _active == 0:
                controller = ThreadpoolController().select(user_api="blas")
                for library in controller.lib_controllers:
                    if library.filepath in _saved:
                        library.set_num_threads(_saved[library.filepath])
                _saved = _current = None
        return False
