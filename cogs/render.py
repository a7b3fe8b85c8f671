"""Turning jobs into the text members read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import discord

from bot.credits import Balance, Estimate, LedgerEntry, QuotaView, Spend, UsageRow
from bot.edits import Progress, ResultFile
from bot.providers.router import HostHealth
from bot.runtime.guilds import ServerSettings
from storage.guilds import AuditEntry
from storage.jobs import Job, JobOutput, JobState

PROMPT_PREVIEW = 300
NO_PINGS = discord.AllowedMentions.none()


def pinging_only(user_id: int) -> discord.AllowedMentions:
    """Mentions that can notify this one member and nobody else, whatever else the text holds."""
    return discord.AllowedMentions(
        everyone=False, roles=False, users=[discord.Object(user_id)], replied_user=False
    )


def plain(text: str) -> str:
    """Text the bot did not write (a host's error, a prompt, a file name, a run id) shown as typed:
    its markdown cannot restyle the message and its mentions cannot ping, whatever is allowed."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def quote_prompt(prompt: str) -> str:
    """The prompt as a one-line quote: shortened, markdown and mentions neutralised."""
    flat = " ".join(prompt.split())
    if len(flat) > PROMPT_PREVIEW:
        flat = flat[: PROMPT_PREVIEW - 1] + "…"
    return plain(flat)


def progress_text(job: Job, progress: Progress) -> str:
    head = f"> {quote_prompt(job.prompt)}\n"
    if progress.state is JobState.QUEUED:
        place = f" — position {progress.queue_position}" if progress.queue_position else ""
        return head + f"⏳ Waiting in line{place}."
    if progress.state is JobState.SUBMITTING:
        return head + "⏳ Sending to the image host…"
    if progress.state is JobState.RUNNING:
        elapsed = f" ({int(progress.elapsed)} s)" if progress.elapsed is not None else ""
        return head + f"🎨 Editing{elapsed}… this usually takes 15–40 seconds."
    return head + "📦 Fetching the result…"


def result_text(job: Job, files: Sequence[ResultFile], *, mention: bool, now: datetime) -> str:
    who = f"<@{job.user_id}> " if mention else ""
    seconds = ""
    if job.submitted_at is not None:
        seconds = f" · {int((now - job.submitted_at).total_seconds())} s"
    shrunk = " · shrunk to fit Discord's upload limit" if any(f.shrunk for f in files) else ""
    per_image = job.credits_estimated // max(1, job.options.count)
    cost = f" · {per_image * len(files)} credits" if per_image else ""
    return f"{who}> {quote_prompt(job.prompt)}\n✅ Edit #{job.id}{seconds}{cost}{shrunk}"


def pointer_text(job: Job, guild_id: int | None, channel_id: int, message_id: int) -> str:
    """What the status message becomes once the result is posted below it."""
    guild = guild_id if guild_id is not None else "@me"
    link = f"https://discord.com/channels/{guild}/{channel_id}/{message_id}"
    return f"✅ Done — see below: [edit #{job.id}]({link})"


def notify_text(mention: bool) -> str:
    if mention:
        return "Your finished edits will mention you, so Discord notifies you; /notify off stops it."
    return "Your finished edits won't mention you (they still appear below your request); /notify on brings it back."


def failure_text(job: Job, message: str, *, mention: bool) -> str:
    who = f"<@{job.user_id}> " if mention else ""
    return f"{who}{refusal_text(job.prompt, message)}"


def refusal_text(prompt: str, message: str) -> str:
    return f"> {quote_prompt(prompt)}\n❌ {plain(message)}"


def cancelled_text(job: Job) -> str:
    return f"> {quote_prompt(job.prompt)}\n✖️ Edit #{job.id} was cancelled; it cost nothing."


def not_done_text(job: Job) -> str:
    if job.state.final:
        return f"Edit #{job.id} did not finish ({job.state.value}), so there is nothing to show."
    return f"Edit #{job.id} is still in progress ({job.state.value}); it will appear when done."


def shown_text(job: Job) -> str:
    return f"> {quote_prompt(job.prompt)}\n🖼️ Edit #{job.id}, by <@{job.user_id}>"


def _when(job: Job) -> str:
    return discord.utils.format_dt(job.created_at, "R")


def _link(job: Job) -> str:
    if job.result_message_id is None:
        return ""
    guild = job.guild_id if job.guild_id is not None else "@me"
    return f" — [result](https://discord.com/channels/{guild}/{job.channel_id}/{job.result_message_id})"


_STATE_MARK = {
    JobState.DONE: "✅",
    JobState.FAILED: "❌",
    JobState.CANCELLED: "✖️",
    JobState.REFUNDED: "↩️",
}


def history_text(jobs: Sequence[Job]) -> str:
    if not jobs:
        return "You have no edits yet; start one with /edit."
    lines = ["Your recent edits (use /show with the number to bring one back):"]
    for job in jobs:
        mark = _STATE_MARK.get(job.state, "⏳")
        prompt = quote_prompt(job.prompt)[:80]
        cost = f" · {job.credits_charged} credits" if job.credits_charged else ""
        lines.append(f"{mark} **#{job.id}** {_when(job)} · {prompt}{cost}{_link(job)}")
    return "\n".join(lines)[:2000]


def mask_text(job: Job, outputs: Sequence[JobOutput]) -> str | None:
    """What became of the member's mask, for Info; None when the edit had none."""
    if job.mask is None or not outputs:
        return None
    kept = [o.changed_outside for o in outputs if o.mask_kept and o.changed_outside is not None]
    if not kept:
        return "The result's shape differs from the original's, so it is as the host made it."
    return (
        "Outside the mask the result is the original; "
        f"the host had changed {max(kept):.0%} of it, which was put back."
    )


def info_embed(job: Job, chain: Sequence[Job | None], outputs: Sequence[JobOutput] = ()) -> discord.Embed:
    """The edit's details; `chain` holds None for an earlier edit the reader may not see."""
    options = job.options
    embed = discord.Embed(title=f"Edit #{job.id}", description=quote_prompt(job.prompt))
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    embed.add_field(name="State", value=job.state.value)
    embed.add_field(
        name="Options",
        value=(
            f"quality {options.quality}, size {options.image_size} at "
            f"{options.resolution}, {options.count} image(s), {options.output_format}"
        ),
        inline=False,
    )
    embed.add_field(
        name="Host", value=f"{job.provider or '—'} · run {plain(job.run_id or '—')}", inline=False
    )
    embed.add_field(name="Cost", value=f"{job.credits_charged} credits")
    if job.submitted_at is not None and job.completed_at is not None:
        seconds = (job.completed_at - job.submitted_at).total_seconds()
        embed.add_field(name="Time", value=f"{seconds:.0f} s")
    if chain:
        steps = " ← ".join("a private edit" if parent is None else f"#{parent.id}" for parent in chain)
        embed.add_field(name="Continues from", value=steps, inline=False)
    if (masked := mask_text(job, outputs)) is not None:
        embed.add_field(name="Mask", value=masked, inline=False)
    return embed


def confirm_text(estimate: Estimate, balance: Balance) -> str:
    images = f"{estimate.images} images" if estimate.images > 1 else "1 image"
    return (
        f"This edit ({images}) costs **{estimate.credits} credits**; you have {balance.available}, "
        f"so {balance.available - estimate.credits} would be left. Go ahead?"
    )


def _refill(balance: Balance) -> str:
    if balance.refills_at is None:
        return "Your allowance does not refill."
    return (
        f"Your allowance of {balance.allowance} refills {discord.utils.format_dt(balance.refills_at, 'R')}."
    )


def balance_text(balance: Balance) -> str:
    held = f" ({balance.reserved} held for edits in progress)" if balance.reserved else ""
    bonus = f" · bonus {balance.bonus}" if balance.bonus else ""
    return (
        f"You have **{balance.available} credits** to spend{held}: "
        f"{max(0, balance.allowance - balance.allowance_used)} of this {balance.period}'s "
        f"{balance.allowance}{bonus}. {_refill(balance)}"
    )


_ENTRY_WORDS = {
    "grant": "granted",
    "revoke": "taken away",
    "reserve": "held for edit",
    "capture": "charged for edit",
    "release": "returned from edit",
    "adjust": "adjusted",
}


def ledger_text(entries: Sequence[LedgerEntry], page: int) -> str:
    if not entries:
        return "No credit entries yet." if page == 1 else f"There is no page {page}."
    lines = [f"Your credit history, page {page} (newest first):"]
    for entry in entries:
        job = f" #{entry.job_id}" if entry.job_id is not None else ""
        reason = f" — {plain(entry.reason)}" if entry.reason else ""
        amount = f"{entry.amount:+d}" if entry.kind.value != "capture" else f"{-entry.amount}"
        when = discord.utils.format_dt(entry.created_at, "R")
        lines.append(f"`{amount:>6}` {_ENTRY_WORDS[entry.kind.value]}{job} {when}{reason}")
    return "\n".join(lines)[:2000]


def prices_text(table: Mapping[str, Mapping[str, int]]) -> str:
    lines = ["Credits per edited image:"]
    for quality, by_resolution in table.items():
        prices = ", ".join(f"{credits} at {resolution}" for resolution, credits in by_resolution.items())
        lines.append(f"**{quality}**: {prices}")
    typical = table.get("medium", {}).get("1K")
    if typical is not None:
        lines.append(f"A typical edit (one medium-quality image) costs {typical} credits.")
    return "\n".join(lines)


def quota_text(view: QuotaView) -> str:
    roles = ", ".join(f"<@&{role}> {amount}" for role, amount in view.roles.items()) or "none"
    users = ", ".join(f"<@{user}> {amount}" for user, amount in view.users.items()) or "none"
    cap = f"{view.server_cap} credits" if view.server_cap is not None else "none"
    refill = "never" if view.period == "none" else f"every {view.period} (UTC)"
    return (
        f"Default allowance: **{view.default_allowance}** credits, refilling {refill}.\n"
        f"Roles: {roles}\nMembers: {users}\nServer cap per period: {cap}"
    )


def usage_text(rows: Sequence[UsageRow], period: str) -> str:
    span = "all time" if period == "all" else f"this {period}"
    if not rows:
        return f"No credits were spent {span}."
    credits = sum(row.credits for row in rows)
    usd = sum(row.usd_micros for row in rows) / 1_000_000
    edits = sum(row.edits for row in rows)
    lines = [f"Usage {span}: {credits} credits, {edits} edits, ${usd:.2f} at the hosts."]
    for row in rows[:15]:
        lines.append(
            f"<@{row.user_id}>: {row.credits} credits, {row.edits} edits, ${row.usd_micros / 1_000_000:.2f}"
        )
    return "\n".join(lines)[:2000]


@dataclass(frozen=True)
class StatusSnapshot:
    version: str
    started_at: datetime
    latency: float
    queued: int
    in_flight: int
    hosts: Sequence[HostHealth]
    spend: Spend
    paused_here: bool
    paused_everywhere: bool


def _usd(micros: int) -> str:
    return f"${micros / 1_000_000:.2f}"


def spend_text(spend: Spend) -> str:
    everywhere = spend.guild_id is None

    def line(label: str, used: int, cap: int | None, resets: datetime) -> str:
        limit = f" of {_usd(cap)}" if cap is not None else " (no cap)" if everywhere else ""
        return f"{label}: {_usd(used)}{limit}, resets {discord.utils.format_dt(resets, 'R')}"

    where = "all servers" if everywhere else "this server"
    return "\n".join(
        [
            f"Host spend in {where} (delivered and in progress):",
            line("Today", spend.day_usd_micros, spend.day_cap_micros, spend.day_resets_at),
            line("This month", spend.month_usd_micros, spend.month_cap_micros, spend.month_resets_at),
        ]
    )


def status_text(status: StatusSnapshot) -> str:
    hosts = ", ".join(
        f"{host.name} {host.state.value}"
        + (f" ({host.consecutive_failures} failures)" if host.consecutive_failures else "")
        for host in status.hosts
    )
    paused = (
        "paused everywhere"
        if status.paused_everywhere
        else "paused here"
        if status.paused_here
        else "taking edits"
    )
    latency = f"{status.latency * 1000:.0f} ms" if status.latency == status.latency else "unknown"
    return "\n".join(
        [
            f"**Retouch {status.version}**, up since {discord.utils.format_dt(status.started_at, 'R')}, {paused}.",
            f"Gateway latency {latency}; edits in {'all servers' if status.spend.guild_id is None else 'this server'}: "
            f"{status.queued} waiting, {status.in_flight} in progress.",
            f"Hosts: {hosts}.",
            spend_text(status.spend),
        ]
    )


def server_settings_text(settings: ServerSettings) -> str:
    channels = ", ".join(f"<#{channel}>" for channel in settings.allowed_channels) or "every channel"
    confirm = (
        f"above {settings.confirm_above} credits"
        if settings.confirm_above is not None
        else "the bot's default"
    )
    return (
        f"Defaults: quality {settings.default_quality or 'the bot default'}, size {settings.default_size or 'auto'}, "
        f"{settings.default_count or 1} version(s). NSFW results: {settings.nsfw_policy.replace('_', ' ')}. "
        f"Editing allowed in {channels}. Confirmation {confirm}. "
        f"Recipe in result files: {'on' if settings.recipe else 'off'}. "
        + ("Editing is paused." if settings.paused else "")
    ).strip()


def audit_text(entries: Sequence[AuditEntry]) -> str:
    if not entries:
        return "No moderator actions recorded on this server yet."
    lines = ["Recent actions (newest first):"]
    for entry in entries:
        target = f" on <@{entry.target_id}>" if entry.target_id else ""
        detail = plain(", ".join(f"{key}={value}" for key, value in entry.detail.items()))
        when = discord.utils.format_dt(entry.created_at, "R")
        lines.append(
            f"{when} <@{entry.actor_id}> {entry.action}{target}" + (f" ({detail})" if detail else "")
        )
    return "\n".join(lines)[:2000]
