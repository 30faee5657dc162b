"""What every benchmark section uses."""

from __future__ import annotations

import logging

log = logging.getLogger("deploy.bench")


def say(section: str, message: str) -> None:
    """A benchmark section's progress line (stderr, through logging)."""
    log.info("  %s: %s", section, message)
