"""The journal of acknowledged edits: what recovery may start, and what it must not."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.edits import EditOptions, EditOrder, InputImage, JobKind
from bot.jobs.journal import Journal, order_from_dict, order_to_dict

ROOT = Path(__file__).resolve().parents[2]
os_fsync = os.fsync


def order(token: str) -> EditOrder:
    return EditOrder(
        guild_id=1,
        channel_id=2,
        user_id=3,
        prompt="p",
        images=[InputImage(url="https://cdn.discordapp.com/a.png", filename="a.png")],
        options=EditOptions(quality="low", count=2),
        mask=InputImage(url="https://cdn.discordapp.com/m.png", filename="m.png"),
        interaction_token=token,
        role_ids=(7, 8),
    )


async def test_orders_round_trip_and_withdrawn_ones_are_left_out(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "r.journal")
    await journal.add(order("kept"))
    await journal.add(order("refused"))
    await journal.withdraw(order("refused"))
    assert await journal.recent(starting=True) == [order("kept")]


async def test_an_order_keeps_its_times_and_a_line_written_before_they_existed_loads(tmp_path: Path) -> None:
    path = tmp_path / "r.journal"
    journal = Journal(path)
    acked = datetime.now(UTC)
    stamped = replace(order("stamped"), acked_at=acked, token_expires_at=acked + timedelta(minutes=15))
    await journal.add(stamped)
    older = order_to_dict(order("older"))
    del older["acked_at"]  # a line an earlier version wrote
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"at": acked.isoformat(), "order": older}) + "\n")
    assert await journal.recent(starting=True) == [stamped, order("older")]


async def test_torn_and_expired_lines_are_skipped_and_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "r.journal"
    journal = Journal(path)
    await journal.add(order("fresh"))
    old = (datetime.now(UTC) - timedelta(minutes=20)).isoformat()
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"at": old, "order": order_to_dict(order("old"))}) + "\n")
        handle.write('{"at": "2026-')  # the crash tore the last line
    assert [o.interaction_token for o in await journal.recent(starting=True)] == ["fresh"]
    await journal.forget_older()
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1


async def test_a_torn_last_line_does_not_swallow_the_next_entry(tmp_path: Path) -> None:
    path = tmp_path / "r.journal"
    journal = Journal(path)
    await journal.add(order("before"))
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"at": "2026-')  # the crash tore the last line
    await Journal(path).add(order("after"))
    assert [o.interaction_token for o in await journal.recent(starting=True)] == ["before", "after"]


class HeldFsync:
    """`os.fsync` that parks every call until released, noting how much of the file it made durable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.durable: list[bytes] = []

    def __call__(self, fd: int) -> None:
        self.started.release()
        self.release.wait()
        os_fsync(fd)
        if os.path.samestat(os.fstat(fd), self.path.stat()):
            self.durable.append(self.path.read_bytes())


async def test_entries_that_arrive_during_an_fsync_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.journal"
    journal = Journal(path)
    await journal.add(order("first"))  # the file and its folder exist: one fsync per write from now
    held = HeldFsync(path)
    monkeypatch.setattr("bot.jobs.journal.os.fsync", held)
    loop = asyncio.get_running_loop()

    leading = asyncio.create_task(journal.add(order("lead")))
    assert await loop.run_in_executor(None, held.started.acquire, True, 5)
    tokens = [f"t{n}" for n in range(50)]
    acknowledged: list[str] = []

    async def add(token: str) -> None:
        await journal.add(order(token))
        # Acknowledged only once an fsync that returned had the entry in the file.
        assert any(f'"{token}"'.encode() in durable for durable in held.durable)
        acknowledged.append(token)

    followers = [asyncio.create_task(add(token)) for token in tokens]
    await asyncio.sleep(0)
    assert not leading.done() and acknowledged == []  # nothing returns before its fsync
    held.release.set()
    await asyncio.gather(leading, *followers)

    assert len(held.durable) == 2  # the one in flight, then one for all fifty that waited
    assert sorted(acknowledged) == sorted(tokens)
    on_disk = [o.interaction_token for o in await journal.recent(starting=True)]
    assert on_disk == ["first", "lead", *tokens]  # in the order they were asked for


async def test_a_failed_write_fails_every_entry_it_carried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "r.journal")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("bot.jobs.journal.os.fsync", full)
    results = await asyncio.gather(*(journal.add(order(f"t{n}")) for n in range(5)), return_exceptions=True)
    assert all(isinstance(result, OSError) for result in results)
    monkeypatch.setattr("bot.jobs.journal.os.fsync", os_fsync)
    await journal.add(order("later"))  # the writer goes on after a failure
    assert "later" in [o.interaction_token for o in await journal.recent(starting=True)]


async def test_forgetting_while_entries_arrive_loses_none(tmp_path: Path) -> None:
    path = tmp_path / "r.journal"
    journal = Journal(path)
    old = (datetime.now(UTC) - timedelta(minutes=20)).isoformat()
    path.write_text(json.dumps({"at": old, "order": order_to_dict(order("old"))}) + "\n", encoding="utf-8")
    tokens = [f"t{n}" for n in range(200)]
    adds = [journal.add(order(token)) for token in tokens]
    await asyncio.gather(*adds[:100], journal.forget_older(), *adds[100:])
    assert [o.interaction_token for o in await journal.recent(starting=True)] == tokens


WRITER = r"""
import asyncio, sys
from pathlib import Path
from tests.unit.test_journal import order
from bot.jobs.journal import Journal

async def main() -> None:
    journal = Journal(Path(sys.argv[1]))
    n = 0
    while True:
        batch = [f"t{n + i}" for i in range(n % 7 + 1)]
        n += len(batch)
        await asyncio.gather(*(journal.add(order(token)) for token in batch))
        print("\n".join(batch), flush=True)

asyncio.run(main())
"""


async def test_killed_mid_write_every_acknowledged_entry_is_there(tmp_path: Path) -> None:
    path = tmp_path / "r.journal"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(path), stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    assert child.stdout is not None
    acknowledged: list[str] = []
    async with asyncio.timeout(60):
        while len(acknowledged) < 120:
            acknowledged.append((await child.stdout.readline()).decode().strip())
    child.kill()  # in the middle of whatever write is on its way
    await child.wait()
    acknowledged += [line.decode().strip() for line in (await child.stdout.read()).splitlines()]
    recovered = {o.interaction_token for o in await Journal(path).recent(starting=True)}
    assert set(acknowledged) <= recovered


# A line as the journal wrote it with `dataclasses.asdict`: files and intake_journal rows from
# then must read back, and a line written now must be the same bytes.
EVERY_FIELD_LINE = (
    '{"guild_id": 1, "channel_id": 2, "user_id": 3, "prompt": "make it \\u2603 \\"blue\\"", "images": '
    '[{"url": "https://cdn.discordapp.com/a.png", "filename": "a.png", "content_type": "image/png", '
    '"size": 10, "width": 4, "height": 3, "path": "0000/9/input-0.png"}], "options": {"quality": "low", '
    '"image_size": "auto", "resolution": "1K", "count": 2, "output_format": "png", "private": false, '
    '"upload_limit": 10485760, "nsfw_policy": "block", "channel_nsfw": false, "recipe": false, '
    '"mention": true}, "mask": {"url": "https://cdn.discordapp.com/m.png", "filename": "m.png", '
    '"content_type": null, "size": null, "width": null, "height": null, "path": null}, "kind": "refine", '
    '"parent_id": 9, "parent_output": 1, "application_id": 5, "interaction_token": "tok", '
    '"status_message_id": 6, "role_ids": [7, 8], "personal": true, '
    '"token_expires_at": "2026-12-07T00:45:05.123456+00:00", "acked_at": "2026-12-07T00:30:05.123456+00:00", '
    '"confirmed": true}'
)


def every_field() -> EditOrder:
    acked = datetime(2026, 12, 7, 0, 30, 5, 123456, tzinfo=UTC)
    return EditOrder(
        guild_id=1,
        channel_id=2,
        user_id=3,
        prompt='make it ☃ "blue"',
        images=[
            InputImage(
                url="https://cdn.discordapp.com/a.png",
                filename="a.png",
                content_type="image/png",
                size=10,
                width=4,
                height=3,
                path="0000/9/input-0.png",
            )
        ],
        options=EditOptions(quality="low", count=2, recipe=False),
        mask=InputImage(url="https://cdn.discordapp.com/m.png", filename="m.png"),
        kind=JobKind.REFINE,
        parent_id=9,
        parent_output=1,
        application_id=5,
        interaction_token="tok",
        status_message_id=6,
        role_ids=(7, 8),
        personal=True,
        token_expires_at=acked + timedelta(minutes=15),
        acked_at=acked,
        confirmed=True,
    )


def test_an_order_is_written_as_the_journal_always_wrote_it_and_reads_back() -> None:
    assert json.dumps(order_to_dict(every_field())) == EVERY_FIELD_LINE
    assert order_from_dict(json.loads(EVERY_FIELD_LINE)) == every_field()
    plain = order("plain")
    assert order_from_dict(json.loads(json.dumps(order_to_dict(plain)))) == plain
    # A line from before the member's confirmation was kept: recovery asks again.
    older = {key: value for key, value in json.loads(EVERY_FIELD_LINE).items() if key != "confirmed"}
    assert order_from_dict(older) == replace(every_field(), confirmed=False)
