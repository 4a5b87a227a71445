"""The one loop of every fit that reports: chunks of epochs, and the reports between them.

``Network.fit`` (both paths) and ``nnfast.dask.fit`` hand a backend whole chunks of epochs
and report between them: the history, ``verbose``'s lines, the callback (which may stop the
fit), the progress bar. ``Reports`` is what a fit reports and when; ``drive`` runs the
chunks. A chunk function trains in place and raises ``TrainingDivergedError`` itself, naming
what diverged; Ctrl-C reaches the caller from inside the chunk (the kernel polls for it).
Nothing here touches the network: the caller commits what ``drive`` returns.
"""

import dataclasses

import numpy as np

# Reports per fit when a callback or a progress bar asks for reports but verbose does not.
DEFAULT_REPORTS = 100


def report_line(output, dtype, iteration, error):
    """What ``verbose`` prints at a report: the original's ``Error:<mean |y - output|>`` for
    output "original" (whatever the optimizer), else the epoch's loss as scikit-learn's MLP
    prints it. iteration counts from 0."""
    if output == "original":
        return "Error:" + str(np.dtype(dtype).type(error))
    return f"Iteration {iteration + 1}, loss = {error:.8f}"


def progress_bar(total):
    """A tqdm progress bar over total iterations (tqdm is optional)."""
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError("progress=True needs tqdm: pip install 'nnfast[progress]' "
                          "(or pip install tqdm)") from exc
    return tqdm(total=total, unit="it", desc="nnfast fit")


@dataclasses.dataclass
class Reports:
    """What a fit reports, and every how many iterations.

    Attributes
    ----------
    every : int
        Iterations between reports: ``report_every`` when given, else ``verbose``, else a
        hundredth of the fit when anything asks for reports, else the whole fit.
    active : bool
        Whether anything is reported (a history is kept).
    live : bool
        Whether a report runs the caller's code or prints (verbose, callback, bar): then a
        chunk must end at each report. A history alone can be filled from larger chunks.
    """

    every: int
    active: bool
    live: bool
    verbose: int
    callback: object
    bar: object
    output: str
    dtype: object

    @classmethod
    def of_fit(cls, iterations, *, verbose, callback, bar, report_every, output, dtype):
        """The reports of a fit of ``iterations`` with ``fit``'s (validated) arguments."""
        live = bool(verbose) or callback is not None or bar is not None
        active = live or report_every is not None
        if report_every is not None:
            every = report_every
        else:
            every = verbose or (max(1, iterations // DEFAULT_REPORTS) if active
                                else max(1, iterations))
        return cls(every, active, live, verbose, callback, bar, output, dtype)

    def report(self, history, iteration, loss):
        """Records and shows one report; True when the callback asks to stop."""
        history.append((iteration, loss))
        if self.verbose:
            print(report_line(self.output, self.dtype, iteration, loss), flush=True)
        return self.callback is not None and bool(self.callback(iteration, loss))


def drive(run_chunk, iterations, reports, *, max_chunk, every_epoch_loss):
    """Runs a fit of ``iterations`` as chunks of at most ``max_chunk`` epochs and reports
    between them; returns (iterations run, history).

    ``run_chunk(start, n_epochs)`` trains epochs start .. start + n_epochs - 1 and returns
    their losses: every epoch's when ``every_epoch_loss`` (a report may then fall anywhere
    in a chunk), else only the first epoch's, at index 0 (the original's fused kernel and
    Dask's rounds: a chunk then ends at each report, so that a report is a chunk's first
    epoch). ``max_chunk`` is an int, or a function of the epochs done that says how many the
    next chunk may take (the estimators' stopping rule cannot fire inside that many). A
    callback returning True ends the fit after the chunk of its report.
    """
    history = []
    done = 0
    split_at_reports = reports.live or not every_epoch_loss
    while done < iterations:
        most = max_chunk(done) if callable(max_chunk) else max_chunk
        n_epochs = min(iterations - done, most)
        if split_at_reports:
            next_report = (done // reports.every + 1) * reports.every
            n_epochs = min(n_epochs, next_report - done)
        losses = run_chunk(done, n_epochs)
        stop = False
        if reports.active:
            # The report epochs of this chunk: the multiples of reports.every in it.
            first = -(-done // reports.every) * reports.every
            last = done + n_epochs if every_epoch_loss else done + 1
            for epoch in range(first, last, reports.every):
                stop = reports.report(history, epoch, float(losses[epoch - done])) or stop
        done += n_epochs
        if reports.bar is not None:
            reports.bar.update(n_epochs)
        if stop:
            break
    return done, history
