"""The event loop the bot runs on: uvloop's where it is installed, else asyncio's own.

uvloop is a dependency on every platform it supports (not Windows), and measured faster on the
bot's paths (see the README's Performance section); the standard loop stays the fallback, so
nothing else in the bot may depend on which one runs.
"""

from __future__ import annotations

import asyncio
import importlib


def use_fastest() -> str:
    """Install uvloop's event loop policy when uvloop can be imported; the loop's name."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
