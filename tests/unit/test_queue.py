"""The fair line: members take turns, whatever order their jobs arrived in."""

from __future__ import annotations

from bot.jobs.queue import FairQueue


async def test_round_robin_across_members() -> None:
    queue = FairQueue()
    for job in (1, 2, 3, 4):
        await queue.put(100, job)
    await queue.put(200, 5)
    await queue.put(300, 6)
    assert queue.order() == [1, 5, 6, 2, 3, 4]
    served = [await queue.get() for _ in range(6)]
    assert served == [1, 5, 6, 2, 3, 4]


async def test_position_and_remove() -> None:
    queue = FairQueue()
    await queue.put(1, 10)
    await queue.put(1, 11)
    await queue.put(2, 20)
    assert queue.position(11) == 3
    assert queue.remove(10)
    assert not queue.remove(10)
    assert queue.order() == [11, 20]
    assert queue.position(99) is None
    assert len(queue) == 2


async def test_order_matches_service_after_rotation() -> None:
    queue = FairQueue()
    for user, job in [(1, 1), (1, 2), (2, 3), (3, 4), (2, 5)]:
        await queue.put(user, job)
    first = await queue.get()
    assert first == 1
    predicted = queue.order()
    assert [await queue.get() for _ in range(4)] == predicted
