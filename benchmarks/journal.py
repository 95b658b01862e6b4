"""What the soak's load generator saw (`loadgen soak --journal`), one JSON line per ingest
call: the batch's first event number and size, when the call was sent and answered (epoch
seconds), and its outcome (accepted, unavailable, hung, failed, other_5xx, refused).

Events are numbered by the load generator; a batch holds consecutive numbers, and a resent
batch the same ones.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson


@dataclass(slots=True)
class Journal:
    # Event number -> when the call answered 202 for it was sent.
    accepted_sent_s: dict[int, float] = field(default_factory=dict)
    # Batches that were refused (503) or unanswered before: first event number -> size and
    # when the first such call was sent.
    refused: dict[int, tuple[int, float]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)

    @classmethod
    def read(cls, path: Path) -> Journal:
        journal = cls()
        for line in path.read_text(encoding="utf-8").splitlines():
            call = orjson.loads(line)
            outcome, first, size = call["outcome"], int(call["first"]), int(call["size"])
            journal.calls[outcome] += 1
            if outcome != "accepted":
                journal.refused.setdefault(first, (size, float(call["sent"])))
                continue
            rejected = set(call.get("rejected", []))
            for i in range(size):
                if i not in rejected:
                    journal.accepted_sent_s.setdefault(first + i, float(call["sent"]))
        return journal

    def backlogs(self, spans: Sequence[tuple[float, float]]) -> list[list[int]]:
        """For each disk-full interval (start, end): the events of the batches first refused
        after it began and before the next one began, which the load generator sent again
        until the daemon accepted them."""
        next_starts = [*(start_s for start_s, _ in spans), math.inf][1:]
        return [
            [
                n
                for first, (size, refused_s) in self.refused.items()
                if start_s <= refused_s < next_start_s
                for n in range(first, first + size)
            ]
            for (start_s, _), next_start_s in zip(spans, next_starts, strict=True)
        ]

    def recovery_windows(
        self, spans: Sequence[tuple[float, float]], answered: Mapping[int, float]
    ) -> list[tuple[float, float]]:
        """For each disk-full interval (start, end): from its start until X answered the last
        event of its backlog (`backlogs`). Events sent in such a window wait behind that
        backlog, whatever their account. `answered`: event number -> X's first 200 to its
        claim (events never answered are the lost ones, counted apart)."""
        return [
            (start_s, max([end_s, *(answered[n] for n in backlog if n in answered)]))
            for (start_s, end_s), backlog in zip(spans, self.backlogs(spans), strict=True)
        ]


def inside(t_s: float, windows: Iterable[tuple[float, float]]) -> bool:
    return any(start_s <= t_s <= end_s for start_s, end_s in windows)
