"""Command line: `python -m bot [--config PATH] [run | check-config | migrate | edit ... | check-hosts |
backup PATH | verify-ledger | copy-db --from URL --to URL]`.

Every failure an operator can fix (a missing key, a broken file, a database from a newer
version, a rejected token) ends in one clear message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, SecretStr

from bot.cli.copydb import copy_db
from bot.cli.hostcheck import DEFAULT_TIMEOUT, HostReport, check_hosts, render
from bot.cli.oneshot import OneShot, run_oneshot
from bot.credits import CreditService
from bot.pictures.files import DownloadError, FileStore
from bot.pictures.images import ImageProblem
from bot.pictures.sizes import IMAGE_SIZES
from bot.providers.base import QUALITIES, ProviderError
from bot.providers.settings import KNOWN_HOSTS
from bot.runtime.config import ConfigError, Settings, load_settings, summary
from bot.runtime.logs import setup_logging
from bot.runtime.loops import use_fastest
from cogs.app import CannotStart, serve
from storage import postgres
from storage.copy import TargetNotEmpty
from storage.db import SchemaTooNew, StoreUnavailable
from storage.sqlite import backup
from storage.store import StoreUrl, migrate_store, open_db

log = logging.getLogger("bot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot", description="Retouch, the image-editing Discord bot."
    )
    parser.add_argument("--config", help="config file (default: $RETOUCH_CONFIG, else ./config.toml)")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the bot (the default)")
    run.add_argument(
        "--sync-commands",
        action="store_true",
        help="sync slash commands with Discord even if they have not changed since the last sync",
    )
    commands.add_parser("check-config", help="validate the configuration and print a summary")
    commands.add_parser("migrate", help="bring the database schema up to date and exit")
    edit = commands.add_parser("edit", help="run one edit without Discord, to test a key and a host")
    edit.add_argument("images", nargs="+", metavar="IMAGE", help="local files or http(s) URLs (up to 16)")
    edit.add_argument("--prompt", required=True, help="what to change")
    edit.add_argument("--mask", help="where changes are allowed: white (or transparent) = may change")
    edit.add_argument("--quality", choices=QUALITIES, default="high")
    edit.add_argument("--size", choices=IMAGE_SIZES, default="auto")
    edit.add_argument("--count", type=int, choices=range(1, 5), default=1)
    edit.add_argument("--host", choices=KNOWN_HOSTS, help="use only this host (default: providers.order)")
    edit.add_argument("--out", required=True, type=Path, help="a file (result.png) or a directory")
    check = commands.add_parser(
        "check-hosts", help="run one cheap masked edit on each host and report what it did (about $0.01 each)"
    )
    check.add_argument("--host", choices=KNOWN_HOSTS, help="check only this host (default: providers.order)")
    check.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds each host may take (default {DEFAULT_TIMEOUT:g})",
    )
    backup_parser = commands.add_parser("backup", help="copy the database safely, even while the bot runs")
    backup_parser.add_argument("path", help="a file to write, or a directory for a timestamped file")
    commands.add_parser(
        "verify-ledger",
        help="replay the credits ledger and report any balance or entry that does not add up (exit 1 if any)",
    )
    copy = commands.add_parser(
        "copy-db", help="copy every job, file reference and ledger entry into a new, empty database"
    )
    copy.add_argument("--from", dest="source", required=True, help="sqlite:///path.db or postgresql://...")
    copy.add_argument("--to", dest="target", required=True, help="sqlite:///path.db or postgresql://...")
    return parser


def _fail(message: str) -> int:
    print(message, file=sys.stderr)  # noqa: T201
    return 1


async def _migrate(settings: Settings) -> int:
    applied, version, copy = await migrate_store(settings.storage.store)
    if copy is not None:
        print(f"Backed up the database to {copy} first.")  # noqa: T201
    if applied:
        print(f"Applied migrations {', '.join(map(str, applied))}; schema is at version {applied[-1]}.")  # noqa: T201
    else:
        print(f"Schema is up to date (version {version}).")  # noqa: T201
    return 0


async def _verify_ledger(settings: Settings) -> int:
    store = settings.storage.store
    if store.dialect == "sqlite" and not await asyncio.to_thread(Path(store.target).exists):
        return _fail(f"There is no database at {store.target} to verify (storage.path).")
    await migrate_store(store)
    db = await open_db(store)
    try:
        service = CreditService(db, settings.credits, settings.budget)
        problems = [*await service.verify(), *await service.balance_differences()]
    finally:
        await db.close()
    for problem in problems:
        print(problem)  # noqa: T201
    if problems:
        return _fail(f"The ledger has {len(problems)} problem(s), listed above.")
    print("The ledger adds up: every balance kept matches its replay.")  # noqa: T201
    return 0


async def _run(settings: Settings, *, sync_commands: bool = False) -> int:
    # The schema is checked before logging in, so a database from a newer version is refused
    # without touching Discord.
    await migrate_store(settings.storage.store)
    try:
        await serve(settings, sync_commands=sync_commands)
    except CannotStart as exc:
        return _fail(str(exc))
    return 0


def _edit(settings: Settings, args: argparse.Namespace) -> int:
    order = OneShot(
        images=args.images,
        prompt=args.prompt,
        out=args.out,
        mask=args.mask,
        quality=args.quality,
        size=args.size,
        count=args.count,
        host=args.host,
    )
    try:
        written = asyncio.run(run_oneshot(settings, order))
    except FileNotFoundError as exc:
        return _fail(f"No such image file: {exc.filename}.")
    except ImageProblem as exc:
        return _fail(f"An input image cannot be used: {exc}.")
    except ProviderError as exc:
        return _fail(f"The edit failed at {exc.host or 'the host'} ({exc.kind.value}): {exc.message}")
    except DownloadError as exc:
        return _fail(f"The result could not be downloaded: {exc}.")
    for path in written:
        print(f"Wrote {path}")  # noqa: T201
    return 0


def _report(report: HostReport) -> None:
    print("\n".join(["", *render(report)]), flush=True)  # noqa: T201


def _check_hosts(settings: Settings, args: argparse.Namespace) -> int:
    hosts = [args.host] if args.host else list(settings.providers.order)
    if args.timeout <= 0:
        return _fail("--timeout must be a positive number of seconds.")
    print(f"Checking {', '.join(hosts)}: one low-quality masked edit each...", flush=True)  # noqa: T201
    store = FileStore(settings.storage.files_dir)
    try:
        reports = asyncio.run(
            check_hosts(settings.providers, hosts, store, timeout=args.timeout, done=_report)
        )
    except KeyboardInterrupt:
        return _fail("Interrupted; runs still in flight were cancelled where the host allows it.")
    passed = sum(report.passed for report in reports)
    print(f"\n{passed} of {len(reports)} hosts passed.")  # noqa: T201
    return 0 if passed == len(reports) else 1


def _backup(settings: Settings, destination: Path) -> int:
    store = settings.storage.store
    if store.dialect == "postgresql":
        written = postgres.dump(store.target, destination)
    else:
        source = Path(store.target)
        if not source.exists():
            return _fail(f"There is no database at {source} to back up (storage.path).")
        try:
            written = backup(source, destination)
        except sqlite3.Error as exc:
            return _fail(f"The backup failed: {exc}.")
    print(f"Backed up {store} to {written}.")  # noqa: T201
    return 0


def _copy_db(settings: Settings, args: argparse.Namespace) -> int:
    try:
        source, target = StoreUrl.parse(args.source), StoreUrl.parse(args.target)
    except ValueError as exc:
        return _fail(f"{exc}.")
    if source == target:
        return _fail("--from and --to name the same database.")
    if source.dialect == "sqlite" and not Path(source.target).exists():
        return _fail(f"There is no database at {source.target} to copy from.")
    try:
        report = asyncio.run(copy_db(source, target, settings.credits, settings.budget))
    except TargetNotEmpty as exc:
        return _fail(f"Refusing to copy: {exc}; copy-db needs a new, empty database (--to).")
    for line in report.render():
        print(line)  # noqa: T201
    return 0 if report.ok else 1


def _secrets(section: BaseModel) -> Iterator[str]:
    """Every secret in the configuration, found by type so a key added later is never missed."""
    for value in dict(section).values():
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, BaseModel):
            yield from _secrets(value)


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
    setup_logging(settings.log.level, json_format=settings.log.json_format, secrets=_secrets(settings))
    try:
        if command == "migrate":
            return asyncio.run(_migrate(settings))
        if command == "verify-ledger":
            return asyncio.run(_verify_ledger(settings))
        if command == "backup":
            return _backup(settings, Path(args.path))
        if command == "edit":
            return _edit(settings, args)
        if command == "check-hosts":
            return _check_hosts(settings, args)
        if command == "copy-db":
            return _copy_db(settings, args)
        loop = use_fastest()
        log.info("starting Retouch on the %s event loop: %s", loop, "; ".join(summary(settings)))
        return asyncio.run(_run(settings, sync_commands=getattr(args, "sync_commands", False)))
    except SchemaTooNew as exc:
        return _fail(f"Refusing to start: {exc}.")
    except StoreUnavailable as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
