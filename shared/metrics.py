"""Every Prometheus metric fedcast exports, defined in one place.

Names and units follow the Prometheus conventions (base units, ``_total`` for
counters, ``_seconds`` and ``_bytes``). Labels have bounded cardinality: a
``service`` label (keyserver, aggregator, edge), message ``type`` (the closed
set of protocol message types), ``reason`` (the closed set of
:class:`fedcast.shared.errors.FedcastError` reason codes) and ``phase``; never a client
id on the aggregator. Several services in one process (``fedcast demo``) share
the process-wide registry and are told apart by the ``service`` label.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "AGGREGATE_SECONDS",
    "CHALLENGE_RESENDS",
    "CHECKPOINTS_DAMAGED",
    "CLIENT_ENCRYPT_SECONDS",
    "CLIENT_TRAIN_SECONDS",
    "CLIPPED_VALUES",
    "CURRENT_ROUND",
    "DECRYPT_SECONDS",
    "DROPOUTS",
    "LAST_ROUND_COMPLETED",
    "MESSAGES_RECEIVED",
    "MESSAGES_REJECTED",
    "MESSAGES_SENT",
    "MESSAGE_BYTES_RECEIVED",
    "MESSAGE_BYTES_SENT",
    "MODEL_QUALITY",
    "ONLINE_SET_SIZE",
    "PHASE_SECONDS",
    "ROUNDS_COMPLETED",
    "ROUND_RETRIES",
    "ROUND_SECONDS",
    "ROUND_STARTED",
    "WAITING_FOR_CLIENTS",
]

# Latency buckets from 5 ms (a small upload) to 10 min (a slow round on Pi-class devices).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

MESSAGES_RECEIVED = Counter(
    "fedcast_messages_received_total", "Messages received, by message type.", ["service", "type"]
)
MESSAGES_SENT = Counter("fedcast_messages_sent_total", "Messages sent, by message type.", ["service", "type"])
MESSAGE_BYTES_RECEIVED = Counter(
    "fedcast_message_received_bytes_total", "Bytes of messages received, by type.", ["service", "type"]
)
MESSAGE_BYTES_SENT = Counter(
    "fedcast_message_sent_bytes_total", "Bytes of messages sent, by type.", ["service", "type"]
)
MESSAGES_REJECTED = Counter(
    "fedcast_messages_rejected_total",
    "Messages rejected (malformed, bad signature, stale, invalid element, ...), by reason.",
    ["service", "reason"],
)
ROUND_SECONDS = Histogram(
    "fedcast_round_duration_seconds", "Wall time of a completed round.", ["service"], buckets=_SECONDS
)
PHASE_SECONDS = Histogram(
    "fedcast_round_phase_duration_seconds",
    "Wall time of each round phase (ready, upload, response, decrypt, update, checkpoint).",
    ["service", "phase"],
    buckets=_SECONDS,
)
ONLINE_SET_SIZE = Gauge(
    "fedcast_online_set_size", "Members of the current attempt's online set.", ["service"]
)
DROPOUTS = Counter(
    "fedcast_dropouts_total", "Members that did not upload or respond in time.", ["service", "phase"]
)
ROUND_RETRIES = Counter(
    "fedcast_round_retries_total", "Round attempts that failed and were retried.", ["service"]
)
ROUNDS_COMPLETED = Counter("fedcast_rounds_completed_total", "Rounds completed.", ["service"])
CHALLENGE_RESENDS = Counter(
    "fedcast_challenge_resends_total",
    "Challenges sent again to members that had not answered in time (the attempt stays open).",
    ["service"],
)
CHECKPOINTS_DAMAGED = Counter(
    "fedcast_checkpoints_damaged_total",
    "Checkpoint files that did not verify at start-up (skipped; an older one was used).",
    ["service"],
)
CURRENT_ROUND = Gauge("fedcast_current_round", "Round id in progress.", ["service"])
# Progress, for alerts that tell "waiting for clients" from "stalled" (docs/METRICS.md, Alerts).
# Set from the aggregator's round events by fedcast.services.observability.record_round_progress.
ROUND_STARTED = Gauge(
    "fedcast_round_started_timestamp_seconds",
    "Unix time at which this aggregator took up the current round (announced it or resumed it).",
    ["service"],
)
LAST_ROUND_COMPLETED = Gauge(
    "fedcast_last_round_completed_timestamp_seconds",
    "Unix time at which this aggregator last completed a round (checkpointed and announced).",
    ["service"],
)
WAITING_FOR_CLIENTS = Gauge(
    "fedcast_waiting_for_clients",
    "1 while the current round waits for clients: its ready window closed with fewer than "
    "min_online clients ready and no online set was fixed since; else 0.",
    ["service"],
)
CLIENT_ENCRYPT_SECONDS = Histogram(
    "fedcast_client_encrypt_seconds", "Client encode + pack + encrypt time.", ["service"], buckets=_SECONDS
)
CLIENT_TRAIN_SECONDS = Histogram(
    "fedcast_client_train_seconds", "Client local training time.", ["service"], buckets=_SECONDS
)
AGGREGATE_SECONDS = Histogram(
    "fedcast_aggregate_seconds",
    "Aggregator time folding uploads and responses per round.",
    ["service"],
    buckets=_SECONDS,
)
DECRYPT_SECONDS = Histogram(
    "fedcast_decrypt_seconds",
    "Aggregator decrypt + unpack + decode time per round.",
    ["service"],
    buckets=_SECONDS,
)
CLIPPED_VALUES = Counter(
    "fedcast_clipped_values_total", "Values clipped to the encoding bound before encryption.", ["service"]
)
MODEL_QUALITY = Gauge(
    "fedcast_model_quality", "Model quality after the latest round (rmse, loss, ...).", ["service", "metric"]
)
