"""The fakes take a burst of new connections the way the real services do: queued until
accepted, not dropped for the client to try again a second later (see `tests.fakes.listen`)."""

from __future__ import annotations

import socket

import yarl

from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow

BURST = 300


def connections_taken(port: int) -> int:
    """How many of BURST new connections complete while the fake's event loop accepts none (this
    call blocks it): the kernel queues them up to the listen backlog and drops the rest."""
    opened: list[socket.socket] = []
    try:
        for _ in range(BURST):
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
    except TimeoutError:
        pass
    finally:
        for connection in opened:
            connection.close()
    return len(opened)


async def test_the_fake_discord_queues_a_burst_of_new_connections() -> None:
    async with FakeDiscord() as server:
        assert connections_taken(server.port) == BURST


async def test_the_fake_host_queues_a_burst_of_new_connections(runflow: FakeRunflow) -> None:
    port = yarl.URL(runflow.base_url).port
    assert port is not None
    assert connections_taken(port) == BURST
