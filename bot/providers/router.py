"""One Provider over several hosts: retries, a circuit breaker per host, and failover.

Policy, for submits:
- Unavailable and RateLimited are retried at the same host with exponential backoff and
  jitter; a host's Retry-After is honoured as given (up to `max_retry_after`, beyond which the
  host is treated as down for this edit rather than making the member wait).
- Once a host's retries are used up, or its circuit is open, the edit moves to the next host.
  AuthFailed also moves on without retrying: a wrong or unfunded key at one host is the owner's
  problem, and members should keep getting edits while another host works.
- InvalidRequest, ContentRejected and RunFailed are answers about this edit, not about the
  host: every host would say the same, so they are raised at once.
- A host's breaker opens after `failure_threshold` consecutive Unavailable/RateLimited
  answers, lets one trial submit through after `cooldown` seconds (half-open) and closes on
  any answer that proves the host is up.

A submit that timed out may still have been accepted, so a retry can run (and bill) an edit
twice; the hosts offer no idempotency key to prevent that.

A submit goes only to hosts whose `resolutions` include the one asked for, failover included:
a host with preset sizes only would charge a 4K edit and deliver about 1K. Likewise only to hosts
whose `image_sizes` include the size asked for: a preset-only host's `square` is under the
model's minimum pixel count.

Each host takes at most its `max_concurrency` edits at once, counted across every process
sharing the database (`HostSlots`): an edit holds one of the host's slots from its submit until
its run ends there. A full host is passed over like a down one, to the next host in order; an
edit that finds every host it may use full (and none down) waits for a slot.

`status`, `result` and `cancel` go straight to the host named in `run.host`: a run already
accepted must be followed where it is, whatever that host's breaker says about new work.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import aiohttp

from bot.providers.base import (
    EditRequest,
    EditResult,
    ErrorKind,
    InvalidRequest,
    Provider,
    ProviderError,
    RateLimited,
    Run,
    RunState,
    Unavailable,
)
from bot.providers.registry import build_providers
from bot.providers.settings import ProvidersSettings

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_HOST_DOWN = (ErrorKind.UNAVAILABLE, ErrorKind.RATE_LIMITED)

# Seconds an edit that found every host it may use full waits before asking again; a slot
# frees when a run ends, possibly in another process, which announces nothing here.
FULL_WAIT = 1.0


class HostSlots(Protocol):
    """The count of edits at each host, kept where every process sharing the work reads it
    (the jobs table: `storage.host_slots`), so a host's `max_concurrency` holds across them all.

    A slot is the job's, from `take` until its run at that host ends (its row says so), or
    until `give_back` when the submit failed there; a process that dies holding one does not
    keep it past its lease.
    """

    async def take(self, host: str, job_id: int, limit: int) -> bool:
        """Whether the job now holds one of `host`'s `limit` slots (False: all are taken)."""
        ...

    async def give_back(self, host: str, job_id: int) -> None:
        """The job is not at `host` after all: its submit there failed."""
        ...


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class HostHealth:
    """One host's breaker for the status command; `opened_at` is on the router's clock."""

    name: str
    state: BreakerState
    consecutive_failures: int
    opened_at: float | None


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 20.0
    max_retry_after: float = 60.0


class CircuitBreaker:
    def __init__(self, *, threshold: int, cooldown: float, clock: Clock) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self.opened_at >= self._cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a submit may go to this host now; half-open lets exactly one trial through."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self._trial_running = False

    def failed(self) -> None:
        self.consecutive_failures += 1
        if self._trial_running or self.consecutive_failures >= self._threshold:
            self.opened_at = self._clock()
        self._trial_running = False

    def abandoned(self) -> None:
        """A submit ended without an answer (cancelled): free the trial slot, learn nothing."""
        self._trial_running = False


class _Host:
    def __init__(self, provider: Provider, concurrency: int, breaker: CircuitBreaker) -> None:
        self.provider = provider
        self.concurrency = concurrency
        self.breaker = breaker


class Router:
    """A Provider that spreads submits over hosts in order; see the module docstring."""

    name = "router"

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        concurrency: Mapping[str, int] | None = None,
        slots: HostSlots | None = None,
        retry: RetryPolicy | None = None,
        failure_threshold: int = 5,
        cooldown: float = 60.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not providers:
            raise ValueError("the router needs at least one host")
        limits = concurrency or {}
        self._hosts = {
            provider.name: _Host(
                provider,
                limits.get(provider.name, 8),
                CircuitBreaker(threshold=failure_threshold, cooldown=cooldown, clock=clock),
            )
            for provider in providers
        }
        self.resolutions: frozenset[str] = frozenset().union(*(p.resolutions for p in providers))
        self.image_sizes: frozenset[str] = frozenset().union(*(p.image_sizes for p in providers))
        # None: nothing counts the edits at each host (the command-line edit makes one).
        self._slots = slots
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._jitter = jitter

    def health(self) -> list[HostHealth]:
        return [
            HostHealth(name, host.breaker.state, host.breaker.consecutive_failures, host.breaker.opened_at)
            for name, host in self._hosts.items()
        ]

    def _delay(self, attempt: int, error: ProviderError) -> float | None:
        """Seconds before retry `attempt` (1-based), or None when the host should be left."""
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return error.retry_after if error.retry_after <= self._retry.max_retry_after else None
        backoff = min(self._retry.max_delay, self._retry.base_delay * 2.0 ** (attempt - 1))
        return backoff * (0.5 + self._jitter())

    async def _submit_to(self, host: _Host, request: EditRequest, callback_url: str | None) -> Run:
        """Submit with retries at one host; raises the last error when it gives up on the host."""
        attempt = 0
        while True:
            attempt += 1
            try:
                run = await host.provider.submit(
                    request,
                    callback_url=callback_url.replace("{host}", host.provider.name) if callback_url else None,
                )
            except ProviderError as error:
                if error.kind not in _HOST_DOWN:
                    host.breaker.succeeded()  # the host answered: it is up
                    raise
                host.breaker.failed()
                last = error
            except BaseException:
                host.breaker.abandoned()
                raise
            else:
                host.breaker.succeeded()
                return run
            delay = self._delay(attempt, last)
            if attempt >= self._retry.attempts or delay is None or not host.breaker.allow():
                raise last
            log.info("%s: %s; retrying in %.1f s", host.provider.name, last.message, delay)
            await self._sleep(delay)

    async def submit(self, request: EditRequest, *, callback_url: str | None = None) -> Run:
        """Submit to the first host that takes it; `{host}` in `callback_url` becomes its name."""
        if request.resolution not in self.resolutions:
            raise InvalidRequest(
                f"no configured image host can make {request.resolution} images "
                f"(only {', '.join(sorted(self.resolutions))})",
                host=self.name,
            )
        able = [
            (name, host)
            for name, host in self._hosts.items()
            if request.resolution in host.provider.resolutions
            and request.image_size in host.provider.image_sizes
        ]
        if not able:
            raise InvalidRequest(
                f"no configured image host can make the {request.image_size} size "
                f"at {request.resolution} within the model's limits",
                host=self.name,
            )
        last: ProviderError | None = None
        failed: set[str] = set()
        while True:
            full = False
            for name, host in able:
                if name in failed:
                    continue
                if not host.breaker.allow():
                    log.info("%s: circuit open, skipping", name)
                    continue
                if not await self._take(name, host, request):
                    host.breaker.abandoned()  # a half-open trial that was never sent
                    # Debug: an edit waiting for a slot asks again every FULL_WAIT.
                    log.debug("%s: all %d of its slots are taken", name, host.concurrency)
                    full = True
                    continue
                try:
                    return await self._submit_to(host, request, callback_url)
                except ProviderError as error:
                    if error.kind not in (*_HOST_DOWN, ErrorKind.AUTH_FAILED):
                        raise
                    log.warning("%s failed (%s: %s); trying the next host", name, error.kind, error.message)
                    await self._give_back(name, request)
                    failed.add(name)
                    last = error
            if not full:
                break
            await self._sleep(FULL_WAIT)
        if last is not None:
            raise last
        raise Unavailable("every configured host is unavailable (circuits open)", host=self.name)

    async def _take(self, name: str, host: _Host, request: EditRequest) -> bool:
        return self._slots is None or await self._slots.take(name, request.job_id, host.concurrency)

    async def _give_back(self, name: str, request: EditRequest) -> None:
        if self._slots is not None:
            await self._slots.give_back(name, request.job_id)

    def _provider(self, run: Run) -> Provider:
        host = self._hosts.get(run.host)
        if host is None:
            raise InvalidRequest(
                f"run {run.run_id} belongs to {run.host!r}, which is not configured", host=run.host
            )
        return host.provider

    async def status(self, run: Run) -> RunState:
        return await self._provider(run).status(run)

    async def result(self, run: Run) -> EditResult:
        return await self._provider(run).result(run)

    async def cancel(self, run: Run) -> bool:
        return await self._provider(run).cancel(run)

    async def close(self) -> None:
        for host in self._hosts.values():
            await host.provider.close()


def build_router(
    settings: ProvidersSettings, session: aiohttp.ClientSession, slots: HostSlots | None = None
) -> Router:
    """The hosts in `providers.order`, each limited to its own `max_concurrency` where `slots`
    counts the edits at each."""
    providers = build_providers(settings, session)
    limits = {provider.name: getattr(settings, provider.name).max_concurrency for provider in providers}
    return Router(providers, concurrency=limits, slots=slots)
