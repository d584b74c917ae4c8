"""Progress reporting and cancellation, shared by long-running jobs, training and inference.

A job takes an optional :class:`Progress`; the QGIS algorithms build one from
``feedback.setProgress`` / ``feedback.isCanceled`` and the CLIs from a text progress bar.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Cancelled", "Progress"]


class Cancelled(Exception):
    """The user cancelled; whatever the job was writing has been discarded."""


class Progress:
    """Maps a job's own 0..1 progress into ``[start, end]`` of a parent and checks for cancel.

    ``report(fraction, message)`` calls ``callback(overall_fraction, message)``;
    ``check()`` raises :class:`Cancelled` when ``cancel()`` returns True.
    """

    def __init__(
        self,
        callback: Callable[[float, str], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        start: float = 0.0,
        end: float = 1.0,
    ):
        self.callback, self.cancel, self.start, self.end = callback, cancel, start, end

    def report(self, fraction: float, message: str = "") -> None:
        self.check()
        if self.callback is not None:
            f = min(max(fraction, 0.0), 1.0)
            self.callback(self.start + (self.end - self.start) * f, message)

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled by the user")

    def sub(self, start: float, end: float) -> Progress:
        """A child covering ``[start, end]`` of this one's range."""
        span = self.end - self.start
        return Progress(self.callback, self.cancel, self.start + span * start, self.start + span * end)


def as_progress(progress: Progress | Callable[[float, str], None] | None) -> Progress:
    """Accept a :class:`Progress`, a bare ``callback(fraction, message)`` or None."""
    if isinstance(progress, Progress):
        return progress
    return Progress(progress)
