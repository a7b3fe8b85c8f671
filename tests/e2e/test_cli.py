"""`python -m bot` as an operator runs it: clear one-line answers, no tracebacks."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from storage.db import connect, latest_version

ROOT = Path(__file__).resolve().parents[2]


async def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RETOUCH_")}
    clean.update(env or {})
    clean["PYTHONPATH"] = str(ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=clean,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_run_without_a_token_says_which_key(tmp_path: Path) -> None:
    code, out, err = await run_cli(cwd=tmp_path)
    assert code == 1
    assert "discord.token: missing" in err
    assert "RETOUCH_DISCORD__TOKEN" in err
    assert "Traceback" not in err + out


async def test_run_without_a_provider_key_says_which_key(tmp_path: Path) -> None:
    code, _, err = await run_cli("run", env={"RETOUCH_DISCORD__TOKEN": "x"}, cwd=tmp_path)
    assert code == 1
    assert "providers.runflow.api_key" in err
    assert "Traceback" not in err


async def test_broken_toml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[discord]\ntoken = "x"\n[web\n', encoding="utf-8")
    code, _, err = await run_cli("check-config", cwd=tmp_path)
    assert code == 1
    assert "config.toml is not valid TOML" in err and "line 3" in err


async def test_migrate_then_refuse_a_newer_database(tmp_path: Path) -> None:
    env = {
        "RETOUCH_DISCORD__TOKEN": "x",
        "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": "y",
        "RETOUCH_STORAGE__PATH": str(tmp_path / "r.db"),
    }
    code, out, _ = await run_cli("migrate", env=env, cwd=tmp_path)
    assert code == 0 and f"version {latest_version()}" in out
    conn = await connect(tmp_path / "r.db")
    await conn.execute(f"PRAGMA user_version = {latest_version() + 5}")
    await conn.close()
    code, out, err = await run_cli("run", env=env, cwd=tmp_path)
    assert code == 1
    assert "Refusing to start" in err and "newer" not in out
    assert "Traceback" not in err
