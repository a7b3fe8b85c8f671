"""What the rest of the bot knows of a host: one value per host module, read by the registry
(which builds the configured hosts) and the web server (which takes their callbacks), so adding a
host is one module and one line in `registry.py`, and nothing else branches on host names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from bot.providers.base import Provider, RunState
from bot.providers.settings import HostSettings

Factory = Callable[[HostSettings, aiohttp.ClientSession], Provider]
CallbackParser = Callable[[bytes], tuple[str, RunState]]
"""A callback body -> (the run it is about, its state); ValueError when it cannot say."""
SecretCheck = Callable[[bytes, Mapping[str, str], str], bool]
"""(raw body, headers, the configured callback secret) -> whether the sender proved itself."""


@dataclass(frozen=True)
class HostSpec:
    name: str
    factory: Factory
    parse_callback: CallbackParser | None = None
    """None: the host never calls back, it is only polled (or answers at once)."""
    check_callback: SecretCheck | None = None
    """None: the host's callbacks carry nothing to check; they only ever prompt a poll."""
