"""The one clock: wall time for what is recorded and compared with stored times, and monotonic
time for intervals.

Built once by the bot (`cogs/app.py`) and handed to every service that reads the time, so a
test can move time by hand for the whole bot rather than patching a module here and there.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go back, for timeouts and intervals."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()
