"""PromptGrid: Flower's Grid semantics (push once, pull until all replies or timeout), polled
at a short interval. The real Grid is exercised by every federation test; here a Grid whose
replies arrive on a schedule checks the waiting logic itself."""

from __future__ import annotations

import time
from types import SimpleNamespace

from flwr.serverapp.grid import Grid

from server.grid import PromptGrid


class ScheduledGrid(Grid):
    """Replies to message i become available `delays[i]` seconds after the push."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.pushed_at = 0.0
        self.pushes = 0
        self.pulls: list[set[str]] = []

    def set_run(self, run):  # type: ignore[no-untyped-def]
        self._run = run

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return "the-run"

    def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def get_node_ids(self) -> list[int]:
        return [7, 8]

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        self.pushes += 1
        self.pushed_at = time.monotonic()
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        asked = set(message_ids)
        self.pulls.append(asked)
        age = time.monotonic() - self.pushed_at
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=f"m{i}"))
                for i, d in enumerate(self.delays) if f"m{i}" in asked and age >= d]

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        raise AssertionError("PromptGrid must not use the inner Grid's waiting")


def replied_to(replies) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r.metadata.reply_to_message_id for r in replies)


def test_waits_for_every_reply_and_asks_only_for_missing_ones() -> None:
    inner = ScheduledGrid([0.0, 0.3, 0.6])
    grid = PromptGrid(inner, interval=0.05)
    assert replied_to(grid.send_and_receive(["a", "b", "c"])) == ["m0", "m1", "m2"]
    assert inner.pushes == 1
    assert inner.pulls[0] == {"m0", "m1", "m2"} and inner.pulls[-1] == {"m2"}
    assert grid.run == "the-run" and list(grid.get_node_ids()) == [7, 8]


def test_timeout_returns_the_replies_that_came() -> None:
    inner = ScheduledGrid([0.0, 60.0])
    grid = PromptGrid(inner, interval=0.05)
    began = time.monotonic()
    assert replied_to(grid.send_and_receive(["a", "b"], timeout=0.5)) == ["m0"]
    assert time.monotonic() - began < 30  # gave up at the timeout, not when the reply came
    assert all(p == {"m1"} for p in inner.pulls[1:])


def test_nothing_to_send_returns_at_once() -> None:
    inner = ScheduledGrid([])
    assert list(PromptGrid(inner).send_and_receive([])) == [] and inner.pulls == []
