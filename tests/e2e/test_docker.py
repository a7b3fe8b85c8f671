"""The Docker image's contract, checked without a Docker engine: the files it copies, the user
it runs as, and its HEALTHCHECK command run against a live bot."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

from tests.e2e.conftest import InProcessBot

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def instruction(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(name + " ")]


def test_image_runs_the_bot_as_a_non_root_user_with_data_on_a_volume() -> None:
    assert instruction("USER") == ["retouch"]
    assert json.loads(instruction("VOLUME")[0]) == ["/data"]
    assert json.loads(instruction("CMD")[-1]) == ["python", "-m", "bot", "run"]
    assert "RETOUCH_STORAGE__PATH=/data/retouch.db" in DOCKERFILE
    copied = {line.split()[0] for line in instruction("COPY") if not line.startswith("--from")}
    assert {"bot", "cogs", "storage", "pyproject.toml"} <= copied
    for package in ("bot", "cogs", "storage"):
        assert (ROOT / package / "__init__.py").exists()


async def test_healthcheck_command_passes_against_a_running_bot(retouch: InProcessBot) -> None:
    assert retouch.bot is not None
    healthcheck = DOCKERFILE.split("HEALTHCHECK", 1)[1].split("CMD", 1)[1].splitlines()[0].strip()
    command = json.loads(healthcheck)
    assert command[:2] == ["python", "-c"]
    script = re.sub(r"127\.0\.0\.1:8080", f"127.0.0.1:{retouch.bot.web.port}", command[2])
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    assert await asyncio.wait_for(process.wait(), 30) == 0
