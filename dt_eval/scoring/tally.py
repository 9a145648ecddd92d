"""Accuracy counters and the breakdown tables built from them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Tally:
    correct: int = 0
    total: int = 0

    def add(self, correct: bool) -> None:
        self.correct += int(correct)
        self.total += 1

    @property
    def accuracy(self) -> float:
        """Percent, as the MMAU/MMAR scripts print it (0 for an empty bucket)."""
        return self.correct / self.total * 100 if self.total else 0.0

    @property
    def fraction(self) -> float:
        """0..1, as the MMSU script prints it."""
        return self.correct / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {"correct": self.correct, "total": self.total, "accuracy": self.accuracy}
