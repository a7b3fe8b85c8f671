"""Prometheus metrics for the owner's dashboards.

Each bot owns its registry (not prometheus-client's global one), so two bots in one process,
as in tests, count separately. Counters are bumped where things happen; gauges that describe
the database (jobs by state, open reservations) are refreshed from it when /metrics is read.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from storage.jobs import JobRepository, JobState

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.edits = Counter(
            "retouch_edits", "Edits that reached a final state", ["state", "host"], registry=self.registry
        )
        self.jobs = Gauge("retouch_jobs", "Jobs in the database by state", ["state"], registry=self.registry)
        self.queue_depth = Gauge("retouch_queue_depth", "Edits waiting for a worker", registry=self.registry)
        self.reservations_open = Gauge(
            "retouch_reservations_open",
            "Credit reservations not yet captured or released",
            registry=self.registry,
        )
        self.host_latency = Histogram(
            "retouch_host_request_seconds",
            "Time for one request to an edit host",
            ["host", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.host_errors = Counter(
            "retouch_host_errors", "Failed requests to edit hosts", ["host", "kind"], registry=self.registry
        )
        self.discord_errors = Counter(
            "retouch_discord_errors",
            "Discord API errors while showing progress or results",
            ["status"],
            registry=self.registry,
        )
        self.callbacks_refused = Counter(
            "retouch_callbacks_refused",
            "Host callbacks refused: bad_signature, rate_limited, too_large, too_slow, unreadable",
            ["host", "reason"],
            registry=self.registry,
        )
        self.credits_spent = Counter(
            "retouch_credits_spent", "Credits charged for delivered edits", registry=self.registry
        )
        self.usd_spent = Counter(
            "retouch_usd_spent", "USD the hosts charged for delivered edits", registry=self.registry
        )
        self.lease_takeovers = Counter(
            "retouch_lease_takeovers",
            "Unfinished jobs taken over from a process whose lease lapsed (it died or hung)",
            registry=self.registry,
        )
        self.claim_latency = Histogram(
            "retouch_claim_seconds",
            "Time to claim the next job from the shared line, waiting for the database included",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

    async def render(self, repo: JobRepository) -> bytes:
        """The exposition text, with the database-derived gauges brought up to date first."""
        counts = await repo.count_by_state()
        for state in JobState:
            self.jobs.labels(state.value).set(counts.get(state, 0))
        self.reservations_open.set(await repo.count_open_holds())
        # The line is the queued rows, shared by every process.
        self.queue_depth.set(counts.get(JobState.QUEUED, 0))
        return generate_latest(self.registry)
