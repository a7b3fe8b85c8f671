"""A started bot's own objects are left out of the collector's full collections: each one walked
them all, and during a burst of `/edit`s took 67–75 ms of the event loop at once."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

from tests.e2e.conftest import InProcessBot


async def test_a_started_bot_has_frozen_what_start_up_left(retouch: InProcessBot) -> None:
    assert retouch.bot is not None
    assert gc.get_freeze_count() > 10_000


def test_start_up_garbage_is_collected_not_frozen_and_only_the_first_start_freezes() -> None:
    """In a process of its own: what is frozen stays frozen for the rest of it."""
    script = textwrap.dedent(
        """
        import gc, weakref
        from bot.runtime import heap

        class Node:
            pass

        gc.disable()  # so only keep_startup collects
        garbage = Node()
        garbage.cycle = garbage
        gone = weakref.ref(garbage)
        del garbage
        heap.keep_startup()
        frozen = gc.get_freeze_count()
        assert gone() is None, "start-up's cyclic garbage was frozen with the rest"
        assert frozen > 0
        later = [Node() for _ in range(1000)]
        heap.keep_startup()
        assert gc.get_freeze_count() == frozen, "a second start froze again"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
