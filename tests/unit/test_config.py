"""Configuration: the file, the environment over it, and messages that name the key to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.__main__ import main
from bot.jobs import JobSettings
from bot.runtime.config import ConfigError, Settings, load_settings

VALID = """
[discord]
token = "file-token-abcdefghijkl"

[providers.runflow]
api_key = "rf-file-key-abcdefgh"
base_url = "http://127.0.0.1:9"

[web]
port = 8123
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("RETOUCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_file_values_are_read(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, VALID))
    assert settings.discord.token.get_secret_value() == "file-token-abcdefghijkl"
    assert settings.web.port == 8123
    assert settings.providers.order == ["runflow"]


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETOUCH_WEB__PORT", "9999")
    monkeypatch.setenv("RETOUCH_PROVIDERS__RUNFLOW__API_KEY", "rf-env-key-12345678")
    settings = load_settings(write(tmp_path, VALID))
    assert settings.web.port == 9999
    assert settings.providers.runflow.api_key is not None
    assert settings.providers.runflow.api_key.get_secret_value() == "rf-env-key-12345678"
    # Overriding one key of a table keeps the file's other keys in it.
    assert settings.providers.runflow.base_url == "http://127.0.0.1:9"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text(VALID.replace("8123", "8124"), encoding="utf-8")
    monkeypatch.setenv("RETOUCH_CONFIG", str(other))
    assert load_settings().web.port == 8124


def test_missing_token_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = caught.value.render()
    assert "discord.token: missing" in text
    assert "RETOUCH_DISCORD__TOKEN" in text


def test_missing_provider_key_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETOUCH_DISCORD__TOKEN", "t")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert [key for key, _ in caught.value.problems] == ["providers.runflow.api_key"]
    assert "RETOUCH_PROVIDERS__RUNFLOW__API_KEY" in caught.value.render()


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\ntoken = "abc\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    text = caught.value.render()
    assert str(path) in text
    assert "line 2" in text


def test_wrong_type_and_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("port = 8123", 'port = "eighty"\nprot = 1'))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    problems = dict(caught.value.problems)
    assert "web.port" in problems and "eighty" in problems["web.port"]
    assert "unknown key" in problems["web.prot"]


def test_unknown_host_in_order_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + '\n[providers]\norder = ["nowhere"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "providers.order.0" in dict(caught.value.problems)


def test_check_config_valid_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID)
    assert main(["--config", str(path), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "Configuration is valid" in out
    assert "file-token-abcdefghijkl" not in out and "rf-file-key-abcdefgh" not in out
    assert "…ijkl" in out


def test_check_config_invalid_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 1
    err = capsys.readouterr().err
    assert "discord.token: missing" in err
    assert "Traceback" not in err


def test_explicit_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "check-config"]) == 1
    assert "does not exist" in capsys.readouterr().err


SECRET = "sk-live-0123456789abcdef"
NUMBER = "918273645546372819"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        (f'[discord]\ntoken = ["{SECRET}"]\n', "discord.token"),
        (f"[discord]\ntoken = {NUMBER}\n", "discord.token"),
        (f'[discord]\ntoken = {{ value = "{SECRET}" }}\n', "discord.token"),
        (f'discord = "{SECRET}"\n', "discord"),
        (
            f'[discord]\ntoken = "t"\n[providers.runflow]\napi_key = ["{SECRET}"]\n',
            "providers.runflow.api_key",
        ),
        (f'[discord]\ntoken = "t"\n[providers.runflow]\napi_key = {NUMBER}\n', "providers.runflow.api_key"),
        (
            f'[discord]\ntoken = "t"\n[providers.runflow]\napi_key = "k"\ncallback_secret = [{NUMBER}]\n',
            "providers.runflow.callback_secret",
        ),
        (f'[discord]\ntoken = "t"\n[providers]\nrunflow = "{SECRET}"\n', "providers.runflow"),
    ],
    ids=["token-list", "token-int", "token-table", "table-string", "key-list", "key-int", "secret", "host"],
)
def test_a_secret_of_the_wrong_type_is_named_but_never_shown(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, toml))
    shown = caught.value.render() + str(caught.value)
    assert SECRET not in shown and NUMBER not in shown, shown
    assert key in dict(caught.value.problems)


def test_secrets_nested_in_environment_json_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETOUCH_DISCORD", f'{{"token": {NUMBER}}}')
    monkeypatch.setenv("RETOUCH_PROVIDERS__RUNFLOW", f'{{"api_key": ["{SECRET}"]}}')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    shown = caught.value.render()
    assert SECRET not in shown and NUMBER not in shown, shown
    assert {"discord.token", "providers.runflow.api_key"} <= set(dict(caught.value.problems))


def test_broken_json_in_the_environment_is_named_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETOUCH_DISCORD", f'{{"token": "{SECRET}"')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    shown = caught.value.render()
    assert SECRET not in shown and "RETOUCH_DISCORD" in shown, shown


@pytest.mark.parametrize("blank", ["", "   \t"])
def test_a_blank_secret_is_missing(tmp_path: Path, blank: str) -> None:
    path = write(tmp_path, f'[discord]\ntoken = "{blank}"\n[providers.runflow]\napi_key = "{blank}"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    problems = dict(caught.value.problems)
    assert problems["discord.token"].startswith("missing")
    assert problems["providers.runflow.api_key"].startswith("missing")


def test_a_blank_token_from_the_environment_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETOUCH_DISCORD__TOKEN", " ")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, VALID))
    assert [key for key, _ in caught.value.problems] == ["discord.token"]


def test_every_problem_is_named_in_one_run(tmp_path: Path) -> None:
    path = write(tmp_path, '[web]\nport = "eighty"\n[providers]\norder = ["runflow", "fal"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    keys = [key for key, _ in caught.value.problems]
    assert keys == ["discord.token", "web.port", "providers.runflow.api_key", "providers.fal.api_key"]


def test_a_validation_error_logged_as_text_carries_no_secret() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(discord={"token": [SECRET]}, providers={"runflow": {"api_key": int(NUMBER)}})
    assert SECRET not in str(caught.value) and NUMBER not in str(caught.value)


def test_image_memory_below_the_minimum_is_refused_with_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "\n[editing]\nimage_memory_mb = 20\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "greater than or equal to 100" in dict(caught.value.problems)["editing.image_memory_mb"]
    assert "RETOUCH_EDITING__IMAGE_MEMORY_MB" in caught.value.render()


def test_check_config_shows_the_image_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID + "\n[editing]\nimage_memory_mb = 250\n")
    assert main(["--config", str(path), "check-config"]) == 0
    assert "editing.image_memory_mb: 250" in capsys.readouterr().out


def problems_of(tmp_path: Path, discord_keys: str) -> dict[str, str]:
    path = write(tmp_path, VALID.replace("[discord]\n", f"[discord]\n{discord_keys}\n"))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return dict(caught.value.problems)


def test_shards_are_read_from_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(write(tmp_path, VALID.replace("[discord]\n", "[discord]\nshard_count = 4\n")))
    assert (settings.discord.shard_count, settings.discord.shard_ids) == (4, None)
    monkeypatch.setenv("RETOUCH_DISCORD__SHARD_IDS", "[3, 0]")
    settings = load_settings(write(tmp_path, VALID.replace("[discord]\n", "[discord]\nshard_count = 4\n")))
    assert settings.discord.shard_ids == [0, 3]
    monkeypatch.delenv("RETOUCH_DISCORD__SHARD_IDS")
    assert load_settings(write(tmp_path, VALID)).discord.shard_count is None


@pytest.mark.parametrize(
    ("keys", "key", "words"),
    [
        ("shard_ids = [0]", "discord.shard_ids", "needs discord.shard_count"),
        (
            "shard_count = 2\nshard_ids = [1, 2, 5]",
            "discord.shard_ids",
            "from 0 to 1 (discord.shard_count is 2); 2, 5",
        ),
        ("shard_count = 2\nshard_ids = [-1]", "discord.shard_ids", "-1 is not one"),
        ("shard_count = 2\nshard_ids = [1, 1]", "discord.shard_ids", "names a shard twice"),
        ("shard_count = 2\nshard_ids = []", "discord.shard_ids", "is empty"),
        ("shard_count = 0", "discord.shard_count", "greater than or equal to 1"),
    ],
)
def test_wrong_shards_are_named_with_their_key(tmp_path: Path, keys: str, key: str, words: str) -> None:
    problems = problems_of(tmp_path, keys)
    assert list(problems) == [key]
    assert words in problems[key]


def test_shard_ids_say_how_to_set_them_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("[discord]\n", "[discord]\nshard_ids = [0]\n"))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "RETOUCH_DISCORD__SHARD_IDS" in caught.value.render()


@pytest.mark.parametrize(
    ("keys", "shown"),
    [
        ("", "discord.shards: off (one gateway connection)"),
        ("shard_count = 3", "discord.shards: all 3 in this process"),
        ("shard_count = 3\nshard_ids = [2, 0]", "discord.shards: 0, 2 of 3"),
    ],
)
def test_check_config_shows_the_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: str, shown: str
) -> None:
    path = write(tmp_path, VALID.replace("[discord]\n", f"[discord]\n{keys}\n"))
    assert main(["--config", str(path), "check-config"]) == 0
    assert shown in capsys.readouterr().out


def test_each_set_of_shards_keeps_a_journal_of_its_own() -> None:
    """Processes of one cluster share a data folder; each replays only what it acknowledged."""

    def journal(**discord: object) -> str:
        settings = Settings(discord={"token": "t", **discord}, providers={"runflow": {"api_key": "k"}})
        return JobSettings.from_settings(settings).journal_path.name  # type: ignore[union-attr]

    assert journal() == "retouch.journal"
    assert journal(shard_count=2, shard_ids=[0]) == "retouch-shards-0.journal"
    assert journal(shard_count=2, shard_ids=[1]) == "retouch-shards-1.journal"
    assert journal(shard_count=2) == "retouch-shards-0-1.journal"
