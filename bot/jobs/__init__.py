"""The life of an edit: queued → submitting → running → delivering → done (or failed).

Shaped like a job queue: `intake` takes an edit in and puts it in line, `runner` (with
`results`) is the workers that carry it to its end, `endings` the other ways it ends,
`recovery` picks up what a crash left, `retention` prunes what is kept, and `queries` reads.
`JobService` is the one door to all of them. Discord is reached only through the `Delivery`
protocol, which the cogs implement.
"""

from bot.jobs.recovery import MAX_STARTS
from bot.jobs.service import JobService
from bot.jobs.settings import JobSettings

__all__ = ["MAX_STARTS", "JobService", "JobSettings"]
