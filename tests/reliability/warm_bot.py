"""`python -m bot run`, with the imports done before it is told to start.

Importing discord.py, aiohttp, pydantic and Pillow takes 1.5-2 s of CPU on a CI machine,
which would double the cost of every crash run (a start and a restart each). So `CrashLab`
keeps one spare process of this module waiting: it imports what `python -m bot` imports
(but not `bot.__main__` itself, which must run fresh as `__main__`), then blocks on a line
from stdin, and only then runs the `bot` package's `__main__` exactly as `python -m bot run` does (same module, `run_name="__main__"`, same argv, same environment,
given when the spare was spawned). Nothing here touches the database, the network or the
configuration before that line arrives, so a spare can be spawned while the bot it will
replace is still running.
"""

from __future__ import annotations

import importlib
import runpy
import sys

import bot.runtime.config  # (the imports are the point)
import bot.runtime.logs  # noqa: F401
from cogs.app import EXTENSIONS


def main() -> None:
    for extension in EXTENSIONS:
        importlib.import_module(extension)
    if not sys.stdin.readline():
        return  # the test discarded this spare
    sys.argv = [sys.argv[0], "run"]
    runpy.run_module("bot", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
