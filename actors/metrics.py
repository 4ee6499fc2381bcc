"""Prometheus metrics of the daemon (served on ``/metrics``).

Every drop, retry and failure increments a counter with a ``reason`` label
(STYLE.md). One registry per daemon, so tests can run several side by side.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The daemon's counters, gauges and histograms."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "marmot_events_received",
            "Events accepted (validated and logged)",
            ["source"],
            registry=r,
        )
        self.events_dropped = Counter(
            "marmot_events_dropped", "Frames or events dropped, by reason", ["reason"], registry=r
        )
        self.events_behind = Counter(
            "marmot_events_behind",
            "Events that occurred further behind the wall clock than router."
            "events_clock_max_lag_s (the events clock does not follow them)",
            registry=r,
        )
        self.followers_released = Counter(
            "marmot_followers_released",
            "Followers released without their leader: lost after 15 minutes, or past "
            "router.max_held_followers (bound)",
            ["reason"],
            registry=r,
        )
        self.loops_stopped = Counter(
            "marmot_automation_loops_stopped",
            "Automations paused for firing on their own events (limits.loop_firings)",
            registry=r,
        )
        self.evaluations = Counter(
            "marmot_evaluations", "Event evaluations by automation actors", registry=r
        )
        self.firings = Counter("marmot_firings", "Automation firings", ["automation"], registry=r)
        self.resolutions = Counter(
            "marmot_resolutions",
            "Automations resolved (resolved_states on)",
            ["automation"],
            registry=r,
        )
        self.actions = Counter(
            "marmot_actions", "Actions run, by type and status", ["type", "status"], registry=r
        )
        self.actor_call_failures = Counter(
            "marmot_actor_call_failures",
            "Failed calls to actors, by reason",
            ["reason"],
            registry=r,
        )
        self.events_trimmed = Counter(
            "marmot_events_trimmed", "Events deleted from the log by retention", registry=r
        )
        self.recovered_firings = Counter(
            "marmot_recovered_firings",
            "Firings that replaying the event log on recovery produced and that had not been "
            "dispatched before",
            registry=r,
        )
        self.late_firings = Counter(
            "marmot_late_firings",
            "Proactive firings evaluated over a second after their deadline (it passed while "
            "the daemon or its timer was down)",
            registry=r,
        )
        self.adopted_actions = Counter(
            "marmot_adopted_actions",
            "Claimed actions left unfinished by a dead executor (or daemon) and carried out "
            "by its successor",
            registry=r,
        )
        self.batch_size = Histogram(
            "marmot_batch_events",
            "Events per batch sent to an automation actor",
            buckets=(1, 2, 5, 10, 25, 50, 100, 200, 500),
            registry=r,
        )
        self.queue_depth = Gauge(
            "marmot_router_queued_events", "Events queued for automation actors", registry=r
        )
        self.executor_queue_depth = Gauge(
            "marmot_executor_queued_firings",
            "Firings waiting to be sent to an executor",
            registry=r,
        )
        self.backpressure_waits = Gauge(
            "marmot_backpressure_waits",
            "Times ingest waited because too many events were queued for automation actors "
            "(a running count)",
            registry=r,
        )
        self.automations = Gauge("marmot_automations", "Automations loaded in actors", registry=r)
        self.serving = Gauge(
            "marmot_serving",
            "1 once the daemon serves every RPC method, 0 while it starts (opening the store, "
            "starting Ray, recovering automations, starting ingest)",
            registry=r,
        )
        self.startup_automations_remaining = Gauge(
            "marmot_startup_automations_remaining",
            "Automations still to be recovered from their checkpoint and the event log while "
            "the daemon starts",
            registry=r,
        )
        self.timer_lateness = Histogram(
            "marmot_timer_lateness_seconds",
            "How late proactive deadlines fired",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=r,
        )
        self.rpc_requests = Counter(
            "marmot_rpc_requests",
            "RPC requests, by method and outcome",
            ["method", "outcome"],
            registry=r,
        )
        self.rpc_requests_dropped = Counter(
            "marmot_rpc_requests_dropped",
            "RPC requests dropped without an answer, by reason (no_envelope, undecodable, "
            "not_a_map, no_id, unread_replies: the peer has not read its earlier replies)",
            ["reason"],
            registry=r,
        )
        self.rpc_replies_dropped = Counter(
            "marmot_rpc_replies_dropped",
            "RPC replies not sent as they were, by reason (too_large: over rpc.max_reply_bytes, "
            "answered with limit_exceeded instead; unread: over the peer's rpc.max_unread_bytes; "
            "peer_gone; send_failed)",
            ["reason"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "marmot_webhook_requests",
            "Requests to webhook URLs, by webhook name (empty for an unknown URL) and outcome "
            "(accepted, failed, too_large, timeout, not_found, disabled, unavailable, error)",
            ["webhook", "outcome"],
            registry=r,
        )
        self.http_refused = Counter(
            "marmot_http_refused",
            "HTTP connections closed or requests refused by the server's limits, by reason "
            "(header_timeout, body_timeout, evicted, too_many_connections, bad_request)",
            ["reason"],
            registry=r,
        )
        self.curve_rejections = Counter(
            "marmot_curve_rejections",
            "CURVE clients refused by the daemon's ZAP handler, by reason (unknown_client_key)",
            ["reason"],
            registry=r,
        )

    def events_by_source(self) -> dict[str, int]:
        """Events accepted so far by where they came from (ingest, rpc, webhook,
        prefect; automation: the daemon's own), as ``marmot_events_received`` counts."""
        return {
            sample.labels["source"]: int(sample.value)
            for family in self.events_received.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        }
