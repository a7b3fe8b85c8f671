"""The journal of acknowledged edits: what recovery may start, and what it must not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.edits import EditOptions, EditOrder, InputImage
from bot.jobs.journal import Journal, order_to_dict


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
    assert await journal.recent() == [order("kept")]


async def test_torn_and_expired_lines_are_skipped_and_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "r.journal"
    journal = Journal(path)
    await journal.add(order("fresh"))
    old = (datetime.now(UTC) - timedelta(minutes=20)).isoformat()
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"at": old, "order": order_to_dict(order("old"))}) + "\n")
        handle.write('{"at": "2026-')  # the crash tore the last line
    assert [o.interaction_token for o in await journal.recent()] == ["fresh"]
    await journal.forget_older()
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1
