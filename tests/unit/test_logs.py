"""What reaches the log from outside (run ids, host error text, file names, prompts, exception
messages) can neither forge a line, nor flood one, nor carry a secret, in text or JSON form."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from bot.runtime.logs import setup_logging

SECRET = "rf-live-0123456789abcdef"
TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OnNlY3JldA"
FORGED = "abc\n2026-12-06 16:00:00,000 ERROR   bot: the database is corrupt, delete it"

log = logging.getLogger("bot.test")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """setup_logging replaces the root handlers; give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines_of(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_an_argument_cannot_forge_a_text_log_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", json_format=False, secrets=())
    log.info("callback for run %s matches no running edit", FORGED)
    log.info("file %r from %s", "a\rb\x1b[2Jc\u2028d", "e\x85f\u202eg")
    lines = lines_of(capsys)
    assert len(lines) == 2, lines
    assert "abc\\n2026-12-06" in lines[0]
    assert "\x1b" not in lines[1] and "\u2028" not in lines[1] and "\u202e" not in lines[1]
    assert "\\x1b" in lines[1] and "\\u2028" in lines[1] and "\\u202e" in lines[1]


def test_a_huge_argument_is_capped(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", json_format=False, secrets=())
    log.info("callback for run %s from %s", "r" * 60_000, "fal")
    (line,) = lines_of(capsys)
    assert len(line) < 1200, len(line)
    assert line.endswith("from fal"), "the cap cuts the value, not the rest of the message"
    assert "more characters" in line


def test_numbers_keep_their_formats(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", json_format=False, secrets=())
    log.info("job %d retrying in %.1f s (%s)", 7, 2.25, {"a": 1})
    (line,) = lines_of(capsys)
    assert line.endswith("job 7 retrying in 2.2 s ({'a': 1})")


def test_a_json_record_escapes_and_caps_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", json_format=True, secrets=())
    log.warning("rejected %s", "a\u2028b\x7fc" + "x" * 60_000)
    (line,) = lines_of(capsys)
    event = json.loads(line)
    assert "\u2028" not in line and "\x7f" not in line
    assert event["message"].startswith("rejected a\\u2028b\\x7fc")
    assert len(line) < 1200


def test_exception_text_cannot_forge_a_line_and_the_traceback_stays_readable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("INFO", json_format=False, secrets=())
    try:
        raise ValueError(FORGED)
    except ValueError:
        log.exception("host said no")
    first, *rest = lines_of(capsys)
    assert first.endswith("bot.test: host said no")
    assert rest and all(line.startswith(" ") for line in rest), rest
    assert any("Traceback (most recent call last):" in line for line in rest)
    assert any('File "' in line and "test_logs.py" in line for line in rest)


def test_configured_secrets_never_reach_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    for json_format in (False, True):
        setup_logging("DEBUG", json_format=json_format, secrets=(SECRET, ""))
        log.info("host answered %s", f"401: invalid key {SECRET}")
        log.info(f"accidentally formatted {SECRET} into the message")
        try:
            raise RuntimeError(f"request with Authorization: Bearer {SECRET} failed")
        except RuntimeError as exc:
            log.exception("request failed: %s", exc)
        out = capsys.readouterr().err
        assert SECRET not in out
        assert out.count("[redacted]") >= 4
        assert "host answered 401: invalid key [redacted]" in out


def test_discord_interaction_tokens_in_urls_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("DEBUG", json_format=False, secrets=())
    base = "https://discord.com/api/v10"
    logging.getLogger("discord.webhook.async_").debug(
        "Webhook ID %s with POST %s has returned status code 200", 1, f"{base}/webhooks/1234/{TOKEN}"
    )
    logging.getLogger("discord.http").warning(
        "POST %s/interactions/98765/%s/callback with None has returned 404", base, TOKEN
    )
    logging.getLogger("discord.gateway").warning(
        "event: %s", {"t": "INTERACTION_CREATE", "d": {"token": TOKEN}}
    )
    try:
        raise OSError(f"cannot reach {base}/webhooks/1234/{TOKEN}/messages/@original?wait=true")
    except OSError:
        log.exception("delivery failed")
    out = capsys.readouterr().err
    assert TOKEN not in out
    assert "/webhooks/1234/[redacted]/messages/@original" in out
    assert "/interactions/98765/[redacted]/callback" in out
    assert "{'token': '[redacted]'}" in out
