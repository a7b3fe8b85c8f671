"""Building the configured hosts by name, so the app never lists them itself: one line a host."""

from __future__ import annotations

import aiohttp

from bot.providers import eachlabs, fal, openai, runflow
from bot.providers.base import Provider
from bot.providers.settings import ProvidersSettings
from bot.providers.spec import HostSpec

SPECS: dict[str, HostSpec] = {
    spec.name: spec for spec in (runflow.SPEC, fal.SPEC, eachlabs.SPEC, openai.SPEC)
}


def build_providers(settings: ProvidersSettings, session: aiohttp.ClientSession) -> list[Provider]:
    """The hosts in `providers.order`, each built from its own settings table."""
    return [SPECS[name].factory(getattr(settings, name), session) for name in settings.order]
