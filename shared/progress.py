"""Progress lines for long reads, through `logging` (stderr under `genofed`, silent in tests).

A biobank-sized site takes minutes to read; a line every tenth of the way says it is alive
and how far it has come. Small reads say nothing: a line only when the work is at least
`PROGRESS_MIN_CALLS` genotype calls.
"""

from __future__ import annotations

import logging
import time

PROGRESS_MIN_CALLS = 50_000_000  # people x variants below which a read logs no progress
_STEPS = 10  # lines per read: at every tenth


class Progress:
    """Counts units of work done out of `total` and logs at each tenth reached."""

    def __init__(self, log: logging.Logger, what: str, total: int, calls: int) -> None:
        self.log, self.what, self.total = log, what, max(0, total)
        self.enabled = calls >= PROGRESS_MIN_CALLS and self.total > 0
        self.next_step = 1
        self.began = time.monotonic()

    def update(self, done: int) -> None:
        """`done` units finished so far (monotone; repeats and overshoots are harmless)."""
        if not self.enabled or done * _STEPS < self.next_step * self.total:
            return
        self.next_step = min(_STEPS, done * _STEPS // self.total) + 1
        done = min(done, self.total)
        self.log.info("%s: %d%% (%s of %s, %.0f s)", self.what, 100 * done // self.total,
                      f"{done:,}", f"{self.total:,}", time.monotonic() - self.began)
