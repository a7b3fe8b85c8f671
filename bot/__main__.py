"""Command line: `python -m bot [--config PATH] [run | check-config | migrate | backup PATH]`.

Every failure an operator can fix (a missing key, a broken file, a database from a newer
version, a rejected token) ends in one clear message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import discord

from bot.app import Retouch
from bot.config import ConfigError, Settings, load_settings, summary
from bot.logs import setup_logging
from storage.db import SchemaTooNew, backup, latest_version, migrate_with_backup

log = logging.getLogger("bot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot", description="Retouch, the image-editing Discord bot."
    )
    parser.add_argument("--config", help="config file (default: $RETOUCH_CONFIG, else ./config.toml)")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the bot (the default)")
    commands.add_parser("check-config", help="validate the configuration and print a summary")
    commands.add_parser("migrate", help="bring the database schema up to date and exit")
    backup_parser = commands.add_parser("backup", help="copy the database safely, even while the bot runs")
    backup_parser.add_argument("path", help="a file to write, or a directory for a timestamped file")
    return parser


def _fail(message: str) -> int:
    print(message, file=sys.stderr)  # noqa: T201
    return 1


async def _migrate(settings: Settings) -> int:
    applied, copy = await migrate_with_backup(settings.storage.path)
    if copy is not None:
        print(f"Backed up the database to {copy} first.")  # noqa: T201
    if applied:
        print(f"Applied migrations {', '.join(map(str, applied))}; schema is at version {applied[-1]}.")  # noqa: T201
    else:
        print(f"Schema is up to date (version {latest_version()}).")  # noqa: T201
    return 0


async def _run(settings: Settings) -> int:
    # The schema is checked before logging in, so a database from a newer version is refused
    # without touching Discord.
    await migrate_with_backup(settings.storage.path)
    bot = Retouch(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, lambda: asyncio.create_task(bot.close()))
    try:
        await bot.start(settings.discord.token.get_secret_value())
    except discord.LoginFailure:
        return _fail(
            "Discord rejected discord.token: check the bot token in the Developer Portal (Bot → Reset Token)."
        )
    except discord.PrivilegedIntentsRequired:
        return _fail(
            "Discord refused the gateway intents; Retouch needs none privileged, so check the application."
        )
    except (aiohttp.ClientConnectionError, OSError) as exc:
        where = settings.discord.api_base or "discord.com"
        return _fail(
            f"Cannot reach Discord at {where} ({exc.__class__.__name__}); check the network or proxy."
        )
    finally:
        await bot.close()
    return 0


def _backup(settings: Settings, destination: Path) -> int:
    if not settings.storage.path.exists():
        return _fail(f"There is no database at {settings.storage.path} to back up (storage.path).")
    try:
        written = backup(settings.storage.path, destination)
    except sqlite3.Error as exc:
        return _fail(f"The backup failed: {exc}.")
    print(f"Backed up {settings.storage.path} to {written}.")  # noqa: T201
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(exc.render())
    if command == "check-config":
        print("Configuration is valid:")  # noqa: T201
        for line in summary(settings):
            print(f"  {line}")  # noqa: T201
        return 0
    setup_logging(settings.log.level, json_format=settings.log.json_format)
    try:
        if command == "migrate":
            return asyncio.run(_migrate(settings))
        if command == "backup":
            return _backup(settings, Path(args.path))
        log.info("starting Retouch: %s", "; ".join(summary(settings)))
        return asyncio.run(_run(settings))
    except SchemaTooNew as exc:
        return _fail(f"Refusing to start: {exc}.")


if __name__ == "__main__":
    sys.exit(main())
