"""The job service end to end below Discord: real Runflow fake, real SQLite, real files."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bot.credits import CreditService, Estimate
from bot.edits import (
    TOKEN_LIFETIME,
    EditOptions,
    EditOrder,
    InputImage,
    JobKind,
    Progress,
    Receipt,
    ResultFile,
)
from bot.jobs import JobService, JobSettings
from bot.pictures.files import FileStore
from bot.pictures.sizes import RESOLUTIONS
from bot.providers.base import Provider
from bot.providers.fal import FalProvider
from bot.providers.settings import FalSettings, HostSettings
from bot.runtime.clock import SYSTEM_CLOCK, Clock
from bot.runtime.config import BudgetSettings, CreditsSettings
from bot.runtime.metrics import Metrics
from storage.claims import ClaimRepository
from storage.db import Database
from storage.jobs import Job, JobRepository, JobState, NewJob
from storage.store import open_db
from tests.conftest import StaticFiles
from tests.fakes.fal import FakeFal
from tests.fakes.runflow import FakeRunflow, expected_output_image
from tests.images import decode, png

CRAFTED_EXPIRY = "f" * 20  # a hex expiry far beyond what a datetime can hold


class RecordingDelivery:
    """A Delivery that keeps what it was asked to show, so tests can wait on it."""

    def __init__(self) -> None:
        self.progress: list[tuple[int, Progress]] = []
        self.delivered: list[tuple[Job, list[ResultFile]]] = []
        self.failures: list[tuple[Job, str]] = []
        self.refusals: list[tuple[EditOrder, str]] = []
        self.cancels: list[int] = []
        self._next_message = 1000
        self.shown = asyncio.Event()
        """Set at each progress shown, for tests that wait for one."""
        self.told_cancelled = asyncio.Event()
        """Set once a cancel has been told, for tests that wait for one."""

    async def show_progress(self, job: Job, progress: Progress) -> None:
        self.progress.append((job.id, progress))
        self.shown.set()

    async def deliver(self, job: Job, files: Sequence[ResultFile]) -> Receipt:
        self.delivered.append((job, list(files)))
        self._next_message += 1
        return Receipt(self._next_message, [f"https://cdn.example/{f.filename}" for f in files])

    async def report_failure(self, job: Job, message: str) -> None:
        self.failures.append((job, message))

    async def refuse(self, order: EditOrder, message: str) -> None:
        self.refusals.append((order, message))

    def cancelled(self, job: Job) -> None:
        self.cancels.append(job.id)
        self.told_cancelled.set()


class Harness:
    def __init__(
        self,
        service: JobService,
        repo: JobRepository,
        delivery: RecordingDelivery,
        credits: CreditService,
        db: Database,
        metrics: Metrics,
    ) -> None:
        self.db = db
        self.service = service
        self.repo = repo
        self.delivery = delivery
        self.credits = credits
        self.metrics = metrics

    async def submit(self, order: EditOrder) -> Job:
        return await self.service.submit(order, self.service.estimate(order.options))


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    settings: HostSettings,
    make: Callable[[HostSettings, aiohttp.ClientSession], Provider],
    *,
    credit_settings: CreditsSettings | None = None,
    max_per_member: int = 3,
    max_per_server: int = 20,
    max_stored_bytes: int | None = None,
    lease_owner: str = "this process",
    lease_seconds: float = 30,
    clock: Clock = SYSTEM_CLOCK,
    store_url: str | None = None,
    poll_interval: float = 0.02,
    concurrency: int = 2,
    route: Callable[[aiohttp.ClientSession, Database], Provider] | None = None,
) -> AsyncIterator[Harness]:
    """A started JobService on a real store (a SQLite file unless `store_url` names another),
    editing at the host `make` builds (or at the hosts `route` builds over the store); several
    in one `tmp_path` (or on one `store_url`) are processes sharing one database, each with its
    own connection."""
    db = await open_db(store_url or tmp_path / "r.db")
    try:
        metrics = Metrics()
        async with aiohttp.ClientSession() as session:
            repo = JobRepository(db)
            credits = CreditService(db, credit_settings or CreditsSettings(), BudgetSettings())
            service = JobService(
                JobSettings(
                    usd_per_image=settings.usd_per_image,
                    concurrency=concurrency,
                    max_per_member=max_per_member,
                    max_per_server=max_per_server,
                    poll_interval=poll_interval,
                    poll_interval_max=max(poll_interval, 0.05),
                    deadline=30,
                    lease_owner=lease_owner,
                    lease_seconds=lease_seconds,
                ),
                repo=repo,
                provider=make(settings, session) if route is None else route(session, db),
                credits=credits,
                files=FileStore(tmp_path / "files", max_bytes=max_stored_bytes, in_use=repo.in_use),
                session=session,
                metrics=metrics,
                clock=clock,
            )
            delivery = RecordingDelivery()
            await service.start(delivery)
            try:
                yield Harness(service, repo, delivery, credits, db, metrics)
            finally:
                await service.stop()
    finally:
        # Also when the test failed: an open SQLite connection's thread keeps pytest from exiting.
        await db.close()


@pytest.fixture
async def fal_harness(tmp_path: Path, store_url: str) -> AsyncIterator[Harness]:
    async with FakeFal() as fal:
        settings = FalSettings(api_key=SecretStr(fal.api_key), base_url=fal.base_url)
        async with running(tmp_path, settings, FalProvider, store_url=store_url) as started:
            yield started


async def settled(harness: Harness, job_id: int, timeout: float = 5.0) -> Job:
    """The job once final, or as it stands when it did not get there in time."""
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(harness.service.wait_settled(job_id), timeout)
    job = await harness.repo.get(job_id)
    assert job is not None
    return job


def order(url: str, **options: object) -> EditOrder:
    return EditOrder(
        guild_id=1,
        channel_id=2,
        user_id=3,
        prompt="invert it",
        images=[InputImage(url=url, filename="a.png", content_type="image/png")],
        options=EditOptions(**options),  # type: ignore[arg-type]
    )


async def test_edit_is_delivered_and_recorded(harness: Harness, static_files: StaticFiles) -> None:
    source = png(40, 30)
    job = await harness.submit(order(static_files.add("a.png", source)))
    final = await harness.service.wait_settled(job.id)
    delivered_job, files = harness.delivery.delivered[0]
    assert delivered_job.id == job.id
    assert len(files) == 1
    result = decode(files[0].path.read_bytes())
    assert result.tobytes() == expected_output_image(decode(source)).convert(result.mode).tobytes()
    assert final.state is JobState.DONE
    assert final.credits_charged == 14  # one high-quality image at 1K
    balance = await harness.credits.balance(1, 3)
    assert (balance.available, balance.reserved) == (50 - 14, 0)
    assert final.result_message_id == 1001
    assert final.run_id is not None and final.usd_micros == 133_000
    outputs = await harness.repo.outputs(job.id)
    assert [o.discord_url for o in outputs] == ["https://cdn.example/retouch-1-1.png"]
    states = [p.state for _, p in harness.delivery.progress]
    assert JobState.SUBMITTING in states


async def test_an_edit_is_put_in_line_without_waiting_for_a_reading_of_the_line(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each job put in line read the whole line for its own place before a worker was woken: in
    a burst, a reading of every waiting row per edit, under the database's one lock."""
    reading, release = asyncio.Event(), asyncio.Event()
    in_line = ClaimRepository.in_line

    async def held(self: ClaimRepository, *args: Any, **kwargs: Any) -> list[int]:
        reading.set()
        await release.wait()
        return await in_line(self, *args, **kwargs)

    monkeypatch.setattr(ClaimRepository, "in_line", held)
    job = await asyncio.wait_for(harness.submit(order(static_files.add("a.png", png(40, 30)))), 5)
    await asyncio.wait_for(reading.wait(), 5)  # its place is read beside it
    assert (await settled(harness, job.id)).state is JobState.DONE
    release.set()


async def test_a_2k_edit_comes_back_at_the_size_worked_out_from_the_first_image(
    fal_harness: Harness, static_files: StaticFiles
) -> None:
    assert fal_harness.service.resolutions == frozenset(RESOLUTIONS)
    job = await fal_harness.submit(order(static_files.add("a.png", png(30, 40)), resolution="2K"))
    final = await fal_harness.service.wait_settled(job.id)
    assert final.state is JobState.DONE
    [output] = await fal_harness.repo.outputs(job.id)
    assert (output.width, output.height) == (1536, 2048)  # "auto" keeps the upright 3:4 source
    _, files = fal_harness.delivery.delivered[0]
    assert decode(files[0].path.read_bytes()).size == (1536, 2048)
    assert final.credits_charged == 28  # one high-quality image at 2K


async def test_a_parent_this_database_never_had_is_dropped_not_fatal(
    harness: Harness, static_files: StaticFiles
) -> None:
    url = static_files.add("a.png", png())
    first = await harness.submit(order(url))
    unknown = replace(order(url), kind=JobKind.REFINE, parent_id=first.id + 100, parent_output=0)
    second = await harness.submit(unknown)
    assert (second.parent_id, second.parent_output) == (None, None)
    known = await harness.submit(
        replace(order(url), kind=JobKind.REFINE, parent_id=first.id, parent_output=0)
    )
    assert known.parent_id == first.id
    for job in (first, second, known):
        assert (await harness.service.wait_settled(job.id)).state is JobState.DONE


async def test_a_preset_only_host_offers_only_1k(harness: Harness) -> None:
    assert harness.service.resolutions == frozenset({"1K"})


async def test_host_failure_fails_the_job_with_a_member_message(
    harness: Harness, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    runflow.fail_runs = {"failure_code": "CONTENT_POLICY_VIOLATION", "failure_message": "nope"}
    job = await harness.submit(order(static_files.add("a.png", png())))
    final = await harness.service.wait_settled(job.id)
    failed_job, message = harness.delivery.failures[0]
    assert failed_job.id == job.id
    assert "safety filter" in message
    balance = await harness.credits.balance(1, 3)
    assert (balance.available, balance.reserved) == (50, 0)  # a failed edit costs nothing
    assert final.state is JobState.FAILED and final.error_kind == "content_rejected"


async def test_polling_survives_a_transient_outage(
    harness: Harness, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    runflow.fail_next("GET", r"/v1/runs/", 503, times=2)
    job = await harness.submit(order(static_files.add("a.png", png())))
    assert (await harness.service.wait_settled(job.id)).state is JobState.DONE
    assert len(harness.delivery.delivered) == 1


async def test_large_result_is_fitted_under_the_upload_limit(
    harness: Harness, static_files: StaticFiles
) -> None:
    from tests.images import noisy_png

    source = noisy_png(400, 400)
    job = await harness.submit(order(static_files.add("a.png", source), upload_limit=len(source) // 6))
    await harness.service.wait_settled(job.id)
    _, files = harness.delivery.delivered[0]
    assert files[0].shrunk and files[0].size <= len(source) // 6


async def test_cancel_while_running_releases_the_credits(
    harness: Harness, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    runflow.hold = True
    job = await harness.submit(order(static_files.add("a.png", png())))
    assert (await harness.credits.balance(1, 3)).reserved == 14
    await runflow.wait_for_run()
    cancelled = await harness.service.cancel(job.id)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    balance = await harness.credits.balance(1, 3)
    assert (balance.available, balance.reserved) == (50, 0)
    assert await harness.service.cancel(job.id) is None  # a second cancel changes nothing
    runflow.release()


async def test_an_edit_the_member_cannot_afford_leaves_no_job(
    harness: Harness, static_files: StaticFiles
) -> None:
    from bot.credits import InsufficientCredits

    expensive = order(static_files.add("a.png", png()), count=4)  # 4 x 14 = 56 > 50
    with pytest.raises(InsufficientCredits) as caught:
        await harness.submit(expensive)
    assert caught.value.needed == 56 and caught.value.available == 50
    assert await harness.repo.get(1) is None


def new_job(**fields: Any) -> NewJob:
    """A job row of member 3 in server 1, with `fields` over the defaults."""
    defaults: dict[str, Any] = {
        "guild_id": 1,
        "channel_id": 2,
        "user_id": 3,
        "prompt": "p",
        "options": EditOptions(),
        "inputs": [],
    }
    return NewJob(**(defaults | fields))


async def test_an_edit_is_dated_when_acknowledged_not_when_its_row_is_written(harness: Harness) -> None:
    """On PostgreSQL a member's edits are written concurrently, their rows in any order."""
    url = "http://127.0.0.1:9/a.png"  # never fetched: the jobs are created, not put in line
    first = await harness.service.note(replace(order(url), interaction_token="first"))
    second = await harness.service.note(replace(order(url), interaction_token="second"))
    assert first.acked_at is not None and second.acked_at is not None
    assert first.acked_at < second.acked_at
    estimate = harness.service.estimate(first.options)
    written_first = await harness.service.create(second, estimate)
    written_second = await harness.service.create(first, estimate)
    assert (written_second.created_at, written_first.created_at) == (first.acked_at, second.acked_at)
    newest_first = await harness.service.recent(3, 1)
    assert [job.interaction_token for job in newest_first] == ["second", "first"]


async def test_a_recovered_edits_token_expires_a_lifetime_after_its_acknowledgement(harness: Harness) -> None:
    """Written by recovery minutes after its acknowledgement, a job counted its interaction
    token's 15 minutes from the writing, and its delivery then tried a dead token first."""
    url = "http://127.0.0.1:9/a.png"  # never fetched: the job is written, not put in line
    noted = await harness.service.note(replace(order(url), interaction_token="late"))
    assert noted.acked_at is not None
    acked = noted.acked_at - timedelta(minutes=10)
    job = await harness.service.record(
        replace(noted, acked_at=acked), harness.service.estimate(noted.options)
    )
    assert job.token_expires_at == acked + TOKEN_LIFETIME


async def test_recovery_settles_a_job_that_finished_without_its_ledger_entry(harness: Harness) -> None:
    # A job that reached a final state, and a crash before its credits were released. It is held
    # under this process's name, as a created job is, so no worker claims it meanwhile; the
    # recovery is the next start's, which treats its own name's leases as left from before.
    job = await harness.repo.insert(
        new_job(
            lease_owner="this process",
            lease_until=datetime.now(UTC) + timedelta(hours=1),
        )
    )
    estimate = Estimate(credits=14, usd_micros=133_000, images=1)
    await harness.credits.reserve(guild_id=1, user_id=3, role_ids=[], job_id=job.id, estimate=estimate)
    await harness.repo.move(job.id, [JobState.QUEUED], JobState.FAILED)
    assert (await harness.credits.balance(1, 3)).reserved == 14
    await harness.service._recovery.recover(starting=True)
    await harness.service._recovery.recover(starting=True)  # twice: changes nothing more
    balance = await harness.credits.balance(1, 3)
    assert (balance.available, balance.reserved) == (50, 0)
    assert await harness.credits.verify() == []


async def test_an_input_url_with_a_crafted_expiry_does_not_stall_its_job(
    fal_harness: Harness, static_files: StaticFiles
) -> None:
    url = static_files.add("a.png", png()) + f"?ex={CRAFTED_EXPIRY}"
    job = await fal_harness.submit(order(url))
    final = await settled(fal_harness, job.id)
    assert final.state is JobState.DONE, final.state  # sent as bytes, as for an expired URL
    assert (await fal_harness.credits.balance(1, 3)).reserved == 0
