"""Every piece of text the bot did not write reaches Discord inert: no pings, no markdown.

A host's error, a run id, a file name or a moderator's reason can hold `<@id>`, `@everyone` or
markdown; shown raw they would ping or restyle the bot's message. Each rendering here is fed
the same hostile text and must show it escaped, while the bot's own mention stays live.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.edits import EditOptions, JobKind
from bot.pictures.validation import AttachmentFacts, attachment_problem
from cogs import render
from storage.guilds import AuditEntry
from storage.jobs import Job, JobState
from storage.ledger import EntryKind, LedgerEntry

BYSTANDER = 123456789012345678
HOSTILE = f"<@{BYSTANDER}> <@&{BYSTANDER}> @everyone @here **loud** `code`"
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def a_job(**changes: object) -> Job:
    fields: dict[str, object] = {
        "id": 7,
        "guild_id": 1,
        "channel_id": 2,
        "user_id": 987654321098765432,
        "parent_id": None,
        "parent_output": None,
        "kind": JobKind.EDIT,
        "state": JobState.FAILED,
        "prompt": "make it blue",
        "options": EditOptions(quality="high", count=1),
        "inputs": [],
        "mask": None,
        "provider": "runflow",
        "run_id": None,
        "run_data": {},
        "application_id": None,
        "interaction_token": None,
        "token_expires_at": None,
        "status_message_id": None,
        "result_message_id": None,
        "credits_estimated": 14,
        "credits_charged": 0,
        "usd_micros": 0,
        "error_kind": None,
        "error": None,
        "attempts": 1,
        "created_at": NOW,
        "updated_at": NOW,
        "submitted_at": None,
        "completed_at": None,
        "notified_at": None,
    }
    return Job(**(fields | changes))  # type: ignore[arg-type]


def inert(shown: str) -> bool:
    """No live mention of anyone but the requester, and no unescaped markdown from HOSTILE."""
    return (
        f"<@{BYSTANDER}>" not in shown
        and f"<@&{BYSTANDER}>" not in shown
        and "@everyone" not in shown
        and "@here" not in shown
        and "\\*\\*loud\\*\\*" in shown
        and "\\`code\\`" in shown
    )


def test_a_host_error_in_a_failure_notice_is_inert_but_the_requester_is_mentioned() -> None:
    job = a_job()
    shown = render.failure_text(job, f"The image host could not finish this edit ({HOSTILE}).", mention=True)
    assert shown.startswith(f"<@{job.user_id}> ")
    assert inert(shown), shown


def test_a_hostile_run_id_in_the_info_card_is_inert() -> None:
    embed = render.info_embed(a_job(run_id=HOSTILE), [])
    host = next(field.value for field in embed.fields if field.name == "Host")
    assert host is not None and inert(host), host


def test_a_moderators_reason_in_the_credit_history_is_inert() -> None:
    entry = LedgerEntry(1, 1, 2, EntryKind.GRANT, 5, None, 3, HOSTILE, "k", None, NOW)
    shown = render.ledger_text([entry], 1)
    assert inert(shown), shown


def test_audit_details_are_inert() -> None:
    entry = AuditEntry(actor_id=3, action="grant", target_id=4, detail={"reason": HOSTILE}, created_at=NOW)
    shown = render.audit_text([entry])
    assert inert(shown), shown


def test_a_file_name_cannot_break_out_of_its_code_span() -> None:
    problem = attachment_problem(AttachmentFacts(f"a`{HOSTILE}`.txt", "text/plain", 10, None, None))
    assert problem is not None
    # The name sits in one code span, where Discord shows text as typed and renders no mention.
    assert problem.count("`") == 2, problem


def test_only_the_requester_can_be_pinged() -> None:
    allowed = render.pinging_only(42)
    assert (allowed.everyone, allowed.roles, allowed.replied_user) == (False, False, False)
    assert not isinstance(allowed.users, bool) and [user.id for user in allowed.users] == [42]
