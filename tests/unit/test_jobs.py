"""The job service end to end below Discord: real Runflow fake, real SQLite, real files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from bot.config import RunflowSettings
from bot.files import FileStore
from bot.jobs import EditOptions, EditOrder, InputImage, JobService, Progress, Receipt, ResultFile
from bot.providers.runflow import RunflowProvider
from storage.db import open_db
from storage.jobs import Job, JobRepository, JobState
from tests.conftest import StaticFiles
from tests.fakes.runflow import FakeRunflow, expected_output_image
from tests.images import decode, png


class RecordingDelivery:
    """A Delivery that keeps what it was asked to show, so tests can wait on it."""

    def __init__(self) -> None:
        self.progress: list[tuple[int, Progress]] = []
        self.delivered: list[tuple[Job, list[ResultFile]]] = []
        self.failures: list[tuple[Job, str]] = []
        self._next_message = 1000

    async def show_progress(self, job: Job, progress: Progress) -> None:
        self.progress.append((job.id, progress))

    async def deliver(self, job: Job, files: Sequence[ResultFile]) -> Receipt:
        self.delivered.append((job, list(files)))
        self._next_message += 1
        return Receipt(self._next_message, [f"https://cdn.example/{f.filename}" for f in files])

    async def report_failure(self, job: Job, message: str) -> None:
        self.failures.append((job, message))


class Harness:
    def __init__(self, service: JobService, repo: JobRepository, delivery: RecordingDelivery) -> None:
        self.service = service
        self.repo = repo
        self.delivery = delivery


@pytest.fixture
async def harness(tmp_path: Path, runflow: FakeRunflow) -> AsyncIterator[Harness]:
    db = await open_db(tmp_path / "r.db")
    async with aiohttp.ClientSession() as session:
        repo = JobRepository(db)
        settings = RunflowSettings(api_key=SecretStr(runflow.api_key), base_url=runflow.base_url)
        service = JobService(
            repo=repo,
            provider=RunflowProvider(settings, session),
            files=FileStore(tmp_path / "files"),
            session=session,
            concurrency=2,
            poll_interval=0.02,
            poll_interval_max=0.05,
            deadline=30,
        )
        delivery = RecordingDelivery()
        await service.start(delivery)
        yield Harness(service, repo, delivery)
        await service.stop()
    await db.close()


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
    job = await harness.service.submit(order(static_files.add("a.png", source)))
    final = await harness.service.wait_settled(job.id)
    delivered_job, files = harness.delivery.delivered[0]
    assert delivered_job.id == job.id
    assert len(files) == 1
    result = decode(files[0].path.read_bytes())
    assert result.tobytes() == expected_output_image(decode(source)).convert(result.mode).tobytes()
    assert final.state is JobState.DONE
    assert final.result_message_id == 1001
    assert final.run_id is not None and final.usd_micros == 133_000
    outputs = await harness.repo.outputs(job.id)
    assert [o.discord_url for o in outputs] == ["https://cdn.example/retouch-1-1.png"]
    states = [p.state for _, p in harness.delivery.progress]
    assert JobState.SUBMITTING in states


async def test_host_failure_fails_the_job_with_a_member_message(
    harness: Harness, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    runflow.fail_runs = {"failure_code": "CONTENT_POLICY_VIOLATION", "failure_message": "nope"}
    job = await harness.service.submit(order(static_files.add("a.png", png())))
    final = await harness.service.wait_settled(job.id)
    failed_job, message = harness.delivery.failures[0]
    assert failed_job.id == job.id
    assert "safety filter" in message
    assert final.state is JobState.FAILED and final.error_kind == "content_rejected"


async def test_polling_survives_a_transient_outage(
    harness: Harness, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    runflow.fail_next("GET", r"/v1/runs/", 503, times=2)
    job = await harness.service.submit(order(static_files.add("a.png", png())))
    assert (await harness.service.wait_settled(job.id)).state is JobState.DONE
    assert len(harness.delivery.delivered) == 1


async def test_large_result_is_fitted_under_the_upload_limit(
    harness: Harness, static_files: StaticFiles
) -> None:
    from tests.images import noisy_png

    source = noisy_png(400, 400)
    job = await harness.service.submit(
        order(static_files.add("a.png", source), upload_limit=len(source) // 6)
    )
    await harness.service.wait_settled(job.id)
    _, files = harness.delivery.delivered[0]
    assert files[0].shrunk and files[0].size <= len(source) // 6
