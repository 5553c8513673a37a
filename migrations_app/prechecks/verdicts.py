"""A pre-check's verdict: its status and the message people read."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CheckStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Verdict:
    status: CheckStatus
    message: str

    @classmethod
    def of(cls, ok: bool, message: str) -> Verdict:
        return cls(CheckStatus.PASS if ok else CheckStatus.FAIL, message)


def passed(message: str) -> Verdict:
    return Verdict(CheckStatus.PASS, message)


def failed(message: str) -> Verdict:
    return Verdict(CheckStatus.FAIL, message)
