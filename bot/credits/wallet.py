"""A member's credits computed from their ledger entries alone, with no I/O, so the rules below
are read (and replayed by verify) apart from the database.

Sign convention. An entry's `amount` is the change it makes to what the member can spend:
grant +, revoke −, adjust ±, reserve −R (credits put on hold for a job), release +(R − C) (the
part of the hold that was not used comes back). capture −C records the charge for the images
delivered; it moves nothing, because those credits already left at reserve, so sums of
spendable credits skip it. For every settled job reserve + release = capture = −(price per image
× images delivered): a job counts as its reserve while open and as its capture once settled,
so a failed or cancelled one (a full release, no capture) costs nothing.

Consumption. A member has a period allowance and a bonus. A reservation takes what is left of
the current period's allowance first and bonus only for the rest; that split is stored with the
hold (`storage.ledger.Hold`) because allowances and roles change. Settling charges the
allowance part first, so what comes back is bonus first. Bonus is a set of lots: each grant with
an expiry is a lot of its own, everything else (grants without expiry, adjustments, revokes) is
one permanent lot; bonus is spent soonest-expiring first and a lot's credits vanish at its
expiry. Credits coming back from a hold return to the period or lot they came from, so if that
has lapsed meanwhile they lapse too, as they would have unspent. Only an admin's revoke or adjust
can push the permanent lot below zero: a debt that lowers what the member can spend until a
grant covers it. So: available = max(0, allowance − allowance used this period) + bonus, where a
period's allowance use is what jobs reserved in it hold (open) or were charged (settled) from
the allowance, and the allowance is resolved on every call from the roles passed in (user
override, else the best matching role, else the server default, else the config default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from storage.balances import BonusLot, Sources
from storage.ledger import EntryKind, Hold, LedgerEntry


def allowance_part(from_allowance: int, charged: int | None) -> int:
    """What a job counts against its period's allowance: its hold's allowance part while open,
    the allowance part of its charge once settled."""
    return from_allowance if charged is None else min(charged, from_allowance)


def bonus_kept(from_allowance: int, charged: int) -> int:
    """How much of a settled job's charge falls on bonus: what the allowance part did not cover."""
    return max(0, charged - from_allowance)


@dataclass
class Bonus:
    """A member's bonus: the permanent lot and the expiring ones. The only code that spends bonus
    and gives it back, used alike by the replay below and by the balances kept beside the ledger
    (`bot.credits.books`), which load just the lots a step touches."""

    permanent: int = 0
    lots: list[BonusLot] = field(default_factory=list)

    def take(self, amount: int, at: datetime) -> Sources:
        taken: Sources = []
        for lot in sorted(self.lots, key=lambda lot: lot.expires_at):
            if amount == 0:
                break
            if lot.remaining > 0 and lot.expires_at > at:
                use = min(lot.remaining, amount)
                lot.remaining -= use
                amount -= use
                taken.append((lot, use))
        if amount:
            self.permanent -= amount
            taken.append((None, amount))
        return taken

    def give_back(self, taken: Sources, kept: int) -> None:
        """Return what a settled hold took, less the `kept` bonus charge (charged first-taken first)."""
        for lot, used in taken:
            charged = min(used, kept)
            kept -= charged
            if lot is None:
                self.permanent += used - charged
            else:
                lot.remaining += used - charged

    def total(self, at: datetime) -> int:
        return self.permanent + sum(lot.remaining for lot in self.lots if lot.expires_at > at)


@dataclass
class _Job:
    reserved: int
    from_allowance: int
    reserved_at: datetime
    taken: Sources
    charged: int | None = None


class Wallet:
    """One member's credits rebuilt from their ledger, entry by entry, by the module's rules."""

    def __init__(self, entries: Sequence[LedgerEntry], holds: Mapping[int, Hold]) -> None:
        self.purse = Bonus()
        self.jobs: dict[int, _Job] = {}
        self.problems: list[str] = []
        captured = {e.job_id: -e.amount for e in entries if e.kind is EntryKind.CAPTURE}
        for entry in entries:
            self._apply(entry, holds, captured)

    def _apply(
        self, entry: LedgerEntry, holds: Mapping[int, Hold], captured: Mapping[int | None, int]
    ) -> None:
        if entry.kind is EntryKind.GRANT and entry.expires_at is not None:
            self.purse.lots.append(BonusLot(entry.id, entry.expires_at, entry.amount))
        elif entry.kind in (EntryKind.GRANT, EntryKind.REVOKE, EntryKind.ADJUST):
            if entry.amount >= 0:
                self.purse.permanent += entry.amount
            else:
                self.purse.take(-entry.amount, entry.created_at)
        elif entry.job_id is None:
            return  # a job entry without a job moves nothing; the reports' verify() names it
        elif entry.kind is EntryKind.RESERVE:
            self._reserve(entry, entry.job_id, holds.get(entry.job_id))
        else:
            job = self.jobs.get(entry.job_id)
            if job is None:
                self.problems.append(f"job {entry.job_id}: {entry.kind} without a reserve before it")
            elif job.charged is None:
                job.charged = captured.get(entry.job_id, 0)
                self.purse.give_back(job.taken, bonus_kept(job.from_allowance, job.charged))

    def _reserve(self, entry: LedgerEntry, job_id: int, hold: Hold | None) -> None:
        reserved = -entry.amount
        if hold is None:
            self.problems.append(f"job {job_id}: reserve without a hold row")
        from_allowance = reserved if hold is None else hold.from_allowance
        from_bonus = reserved - from_allowance
        available = self.bonus(entry.created_at)
        if from_bonus > 0 and from_bonus > available:
            self.problems.append(
                f"job {job_id}: held {from_bonus} bonus credits when {available} were available"
            )
        self.jobs[job_id] = _Job(
            reserved, from_allowance, entry.created_at, self.purse.take(from_bonus, entry.created_at)
        )

    def bonus(self, at: datetime) -> int:
        return self.purse.total(at)

    def reserved(self) -> int:
        return sum(job.reserved for job in self.jobs.values() if job.charged is None)

    def allowance_used(self, since: datetime | None) -> int:
        return sum(
            allowance_part(job.from_allowance, job.charged)
            for job in self.jobs.values()
            if since is None or job.reserved_at >= since
        )


_SIGNS: dict[EntryKind, Callable[[int], bool]] = {
    EntryKind.GRANT: lambda amount: amount > 0,
    EntryKind.REVOKE: lambda amount: amount < 0,
    EntryKind.ADJUST: lambda amount: amount != 0,
    EntryKind.RESERVE: lambda amount: amount <= 0,
    EntryKind.CAPTURE: lambda amount: amount <= 0,
    EntryKind.RELEASE: lambda amount: amount >= 0,
}
_JOB_KINDS = (EntryKind.RESERVE, EntryKind.CAPTURE, EntryKind.RELEASE)


def entry_problems(entry: LedgerEntry) -> list[str]:
    problems = []
    if not _SIGNS[entry.kind](entry.amount):
        problems.append(f"entry {entry.id}: {entry.kind} of {entry.amount} has the wrong sign")
    if (entry.job_id is not None) != (entry.kind in _JOB_KINDS):
        problems.append(f"entry {entry.id}: {entry.kind} {'with' if entry.job_id else 'without'} a job")
    if entry.expires_at is not None and entry.kind is not EntryKind.GRANT:
        problems.append(f"entry {entry.id}: only grants expire, not a {entry.kind}")
    return problems


def job_problems(job_id: int, entries: Sequence[LedgerEntry], hold: Hold | None) -> list[str]:
    problems = []
    counts = {kind: sum(1 for e in entries if e.kind is kind) for kind in _JOB_KINDS}
    if counts[EntryKind.RESERVE] != 1 or counts[EntryKind.CAPTURE] > 1 or counts[EntryKind.RELEASE] > 1:
        problems.append(f"job {job_id}: entries {dict(counts)} are not one reserve settled at most once")
    if len({(e.guild_id, e.user_id) for e in entries}) > 1:
        problems.append(f"job {job_id}: entries for more than one member")
    amounts = {kind: sum(e.amount for e in entries if e.kind is kind) for kind in _JOB_KINDS}
    reserved, captured, released = (amounts[kind] for kind in _JOB_KINDS)
    if (counts[EntryKind.CAPTURE] or counts[EntryKind.RELEASE]) and reserved + released != captured:
        problems.append(f"job {job_id}: reserve {reserved} + release {released} != capture {captured}")
    if hold is not None:
        per_image, rest = divmod(-reserved, hold.images)
        if rest or not 0 <= hold.from_allowance <= -reserved:
            problems.append(f"job {job_id}: hold {hold} does not fit its reserve of {-reserved}")
        elif per_image and captured % per_image:
            problems.append(f"job {job_id}: capture {captured} is not a whole number of images")
    return problems
