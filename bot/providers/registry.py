"""Building the configured hosts by name, so the app never lists them itself."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from bot.providers.base import Provider
from bot.providers.eachlabs import EachlabsProvider
from bot.providers.fal import FalProvider
from bot.providers.openai import OpenAIProvider
from bot.providers.runflow import RunflowProvider
from bot.providers.settings import HostSettings, ProvidersSettings

Factory = Callable[[HostSettings, aiohttp.ClientSession], Provider]

FACTORIES: dict[str, Factory] = {
    "runflow": RunflowProvider,
    "fal": FalProvider,
    "eachlabs": EachlabsProvider,
    "openai": OpenAIProvider,
}


def build_providers(settings: ProvidersSettings, session: aiohttp.ClientSession) -> list[Provider]:
    """The hosts in `providers.order`, each built from its own settings table."""
    return [FACTORIES[name](getattr(settings, name), session) for name in settings.order]
