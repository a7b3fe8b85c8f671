"""A waiting line that takes turns between members.

One member's twenty edits must not starve everyone else, so the line is a ring of members,
each with their own first-in-first-out list; `get` serves the member at the front of the ring
and moves them to the back.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque


class FairQueue:
    def __init__(self) -> None:
        self._lines: OrderedDict[int, deque[int]] = OrderedDict()
        self._ready = asyncio.Condition()

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    async def put(self, user_id: int, job_id: int) -> None:
        async with self._ready:
            self._lines.setdefault(user_id, deque()).append(job_id)
            self._ready.notify()

    async def get(self) -> int:
        async with self._ready:
            await self._ready.wait_for(lambda: bool(self._lines))
            user_id, line = self._lines.popitem(last=False)
            job_id = line.popleft()
            if line:
                self._lines[user_id] = line
            return job_id

    def remove(self, job_id: int) -> bool:
        """Take a job out of the line (a cancel while queued); False if it was not waiting."""
        for user_id, line in self._lines.items():
            if job_id in line:
                line.remove(job_id)
                if not line:
                    del self._lines[user_id]
                return True
        return False

    def order(self) -> list[int]:
        """Job ids in the order `get` would hand them out."""
        lines = [list(line) for line in self._lines.values()]
        result: list[int] = []
        depth = 0
        while True:
            row = [line[depth] for line in lines if depth < len(line)]
            if not row:
                return result
            result.extend(row)
            depth += 1

    def position(self, job_id: int) -> int | None:
        """1-based place in line, or None when the job is not waiting."""
        try:
            return self.order().index(job_id) + 1
        except ValueError:
            return None
