"""`python -m bot` as an operator runs it: clear one-line answers, no tracebacks."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from storage.sqlite import connect, latest_version
from tests.conftest import StaticFiles
from tests.fakes.openai import FakeOpenAI
from tests.fakes.runflow import FakeRunflow, expected_output_image
from tests.images import decode, png

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


async def test_run_without_any_config_names_every_problem_in_one_run(tmp_path: Path) -> None:
    code, out, err = await run_cli(env={"RETOUCH_WEB__PORT": "eighty"}, cwd=tmp_path)
    assert code == 1
    for key in ("discord.token", "providers.runflow.api_key", "web.port"):
        assert f"{key}: " in err, err
    assert "RETOUCH_DISCORD__TOKEN" in err and "RETOUCH_PROVIDERS__RUNFLOW__API_KEY" in err
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
    conn = connect(tmp_path / "r.db")
    conn.execute(f"PRAGMA user_version = {latest_version() + 5}")
    conn.close()
    code, out, err = await run_cli("run", env=env, cwd=tmp_path)
    assert code == 1
    assert "Refusing to start" in err and "newer" not in out
    assert "Traceback" not in err


async def test_edit_without_discord_writes_the_result(
    tmp_path: Path, static_files: StaticFiles, runflow: FakeRunflow
) -> None:
    source = png(40, 30)
    url = static_files.add("photo.png", source)
    env = {
        "RETOUCH_DISCORD__TOKEN": "x",
        "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": runflow.api_key,
        "RETOUCH_PROVIDERS__RUNFLOW__BASE_URL": runflow.base_url,
        "RETOUCH_PROVIDERS__POLL_INTERVAL": "0.05",
    }
    code, out, err = await run_cli(
        "edit", url, "--prompt", "invert", "--out", str(tmp_path / "result.png"), env=env, cwd=tmp_path
    )
    assert code == 0, err
    assert "Wrote" in out and "runflow: succeeded" in err
    edited = decode((tmp_path / "result.png").read_bytes())
    assert edited.tobytes() == expected_output_image(decode(source)).convert(edited.mode).tobytes()


async def test_edit_sends_local_files_as_bytes(tmp_path: Path) -> None:
    fake = FakeOpenAI()
    await fake.start()
    try:
        (tmp_path / "in.png").write_bytes(png(32, 32))
        env = {
            "RETOUCH_DISCORD__TOKEN": "x",
            "RETOUCH_PROVIDERS__ORDER": '["openai"]',
            "RETOUCH_PROVIDERS__OPENAI__API_KEY": fake.api_key,
            "RETOUCH_PROVIDERS__OPENAI__BASE_URL": fake.base_url,
        }
        code, _, err = await run_cli(
            "edit", "in.png", "--prompt", "x", "--count", "2", "--out", "outs", env=env, cwd=tmp_path
        )
        assert code == 0, err
        assert sorted(p.name for p in (tmp_path / "outs").iterdir()) == ["retouch-1.png", "retouch-2.png"]
    finally:
        await fake.close()


async def test_edit_with_a_missing_file_says_so(tmp_path: Path) -> None:
    env = {"RETOUCH_DISCORD__TOKEN": "x", "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": "y"}
    code, _, err = await run_cli("edit", "nope.png", "--prompt", "x", "--out", "o.png", env=env, cwd=tmp_path)
    assert code == 1 and "No such image file: nope.png" in err and "Traceback" not in err


SECRET = "sk-live-0123456789abcdef"
NUMBER = "918273645546372819"


async def test_check_config_never_prints_a_secret_whatever_its_type(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        f'[discord]\ntoken = {NUMBER}\n[providers.runflow]\napi_key = ["{SECRET}"]\n', encoding="utf-8"
    )
    env = {
        "RETOUCH_PROVIDERS__ORDER": '["runflow", "openai"]',
        "RETOUCH_PROVIDERS__OPENAI": f'{{"api_key": ["{SECRET[::-1]}"]}}',
    }
    code, out, err = await run_cli("check-config", env=env, cwd=tmp_path)
    assert code == 1
    for secret in (SECRET, NUMBER, SECRET[::-1]):
        assert secret not in out + err, err
    for key in ("discord.token", "providers.runflow.api_key", "providers.openai.api_key"):
        assert key in err
    assert "Traceback" not in err


async def test_check_config_on_the_example_with_only_a_host_key_names_the_empty_token(tmp_path: Path) -> None:
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    assert '\napi_key = ""\n' in example
    (tmp_path / "config.toml").write_text(
        example.replace('\napi_key = ""\n', '\napi_key = "rf-key-12345678"\n'), encoding="utf-8"
    )
    code, out, err = await run_cli("check-config", cwd=tmp_path)
    assert code == 1, out
    assert "Configuration is valid" not in out
    assert "discord.token: missing" in err and "RETOUCH_DISCORD__TOKEN" in err


async def test_run_with_a_blank_token_refuses_before_contacting_discord(tmp_path: Path) -> None:
    env = {
        "RETOUCH_DISCORD__TOKEN": "  ",
        # Were the token accepted, the login would go here (nothing listens) rather than to Discord.
        "RETOUCH_DISCORD__API_BASE": "http://127.0.0.1:9/api/v10",
        "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": "y",
        "RETOUCH_STORAGE__PATH": str(tmp_path / "r.db"),
    }
    code, out, err = await run_cli("run", env=env, cwd=tmp_path)
    assert code == 1
    assert "discord.token: missing" in err and "RETOUCH_DISCORD__TOKEN" in err
    assert "Traceback" not in err + out
