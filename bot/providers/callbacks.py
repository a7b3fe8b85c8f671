"""Hosts' callbacks as pure functions: is it genuine, and which run does it finish how.

The web server owns the HTTP side; keeping these free of it lets them be tested (and fuzzed)
byte for byte. Every parser raises only ValueError, with a short reason, for a body it cannot
use, so the server can answer 400 for all of them alike.

fal signs its webhooks with Ed25519 (keys from its JWKS), which needs the `cryptography`
package this project does not ship, so there is no `verify_fal` here yet. Until there is, a
fal webhook must be treated as a hint: confirm the run with `FalProvider.status` (which asks
fal itself) before acting on it. each::labs signs nothing: it sends the `webhook_secret` we
gave it verbatim in `X-Webhook-Secret` (not an HMAC of the body), which proves only that the
sender knows the secret; its webhooks, like every host's, only prompt a poll.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from bot.providers.base import ProviderError, RunFailed, RunState, RunStatus
from bot.providers.eachlabs import failure, prediction_state
from bot.providers.fal import output_state, run_error
from bot.providers.payloads import int_or_none
from bot.providers.runflow import run_state

RUNFLOW_SIGNATURE_HEADER = "Runflow-Signature"
EACHLABS_HEADER = "X-Webhook-Secret"
_LIST_KEYS = ("outputs", "images", "image_urls")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def verify_runflow(raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
    """Whether `Runflow-Signature` is the hex HMAC-SHA256 of the exact body under `secret`.

    An empty secret never verifies: that is a configuration mistake, not a reason to accept
    anything anyone posts.
    """
    signature = _header(headers, RUNFLOW_SIGNATURE_HEADER)
    if not secret or signature is None:
        return False
    signature = signature.strip().lower()
    if not signature.isascii():
        return False
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())


def verify_eachlabs(raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
    """Whether `X-Webhook-Secret` is exactly `secret`, compared in constant time.

    each::labs documents the header as carrying the secret verbatim, with no signature of the
    body (docs.eachlabs.ai/api/webhooks/payload-reference), so `raw_body` plays no part. An empty
    secret never verifies.
    """
    sent = _header(headers, EACHLABS_HEADER)
    if not secret or sent is None:
        return False
    # Bytes, since compare_digest refuses non-ASCII text; surrogatepass encodes any str one way.
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass"))


def _object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("the body is not a JSON object")
    return parsed


def _id(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} is missing")
    return value


def _runflow_output(output: Any) -> dict[str, Any] | None:
    """The callback's output in the shape `run_state` reads: lists where it iterates, and no
    seed that is not an integer (a bad seed is dropped, it is no reason to refuse the result)."""
    if output is None:
        return None
    if not isinstance(output, dict):
        raise ValueError("output is not an object")
    for key in _LIST_KEYS:
        if output.get(key) is not None and not isinstance(output[key], list):
            raise ValueError(f"output.{key} is not a list")
    nsfw = output.get("nsfw_detected")
    if nsfw is not None and not isinstance(nsfw, bool | list):
        raise ValueError("output.nsfw_detected is not a flag")
    return {**output, "seed": int_or_none(output.get("seed"))}


def parse_runflow_callback(body: bytes) -> tuple[str, RunState]:
    """A Runflow callback as (run id, state), read the same way as a polled run.

    docs.runflow.io/concepts/callbacks: `status` is the run's final `status_code` (succeeded,
    partial_succeeded, failed, canceled), `output` the model output, the error envelope
    `{code, message, errors}` on failure, or null when cancelled.
    """
    payload = _object(body)
    run_id = _id(payload, "run_id")
    status = payload.get("status")
    if not isinstance(status, str):
        raise ValueError("status is missing")
    output = _runflow_output(payload.get("output"))
    run: dict[str, Any] = {"status": status, "duration_ms": int_or_none(payload.get("duration_ms"))}
    if status == "failed":
        reason = output or {}
        run["failure_code"] = payload.get("failure_code") or reason.get("code")
        run["failure_message"] = payload.get("failure_message") or reason.get("message")
    else:
        run["output"] = output
    try:
        state = run_state(run)
    except ProviderError as error:
        raise ValueError(error.message) from None
    if not state.status.final:
        raise ValueError(f"status {status!r} is not a final one")
    return run_id, state


def parse_fal_webhook(body: bytes) -> tuple[str, RunState]:
    """A fal webhook as (request id, state): `status` OK with the model output as `payload`,
    or ERROR with `error` and the model's error body as `payload`."""
    payload = _object(body)
    request_id = _id(payload, "request_id")
    status = payload.get("status")
    output = payload.get("payload")
    if status == "OK":
        if output is None:
            # fal could not serialise the output; it says why in payload_error.
            reason = payload.get("payload_error")
            message = str(reason) if reason else "fal sent no output"
            return request_id, RunState(RunStatus.FAILED, error=RunFailed(message, host="fal"))
        if not isinstance(output, dict):
            raise ValueError("payload is not an object")
        return request_id, output_state(output)
    if status == "ERROR":
        error = payload.get("error")
        fallback = str(error) if error else "the run failed at fal"
        return request_id, RunState(RunStatus.FAILED, error=run_error(output, fallback))
    raise ValueError("status is not OK or ERROR")


def parse_eachlabs_webhook(body: bytes) -> tuple[str, RunState]:
    """An each::labs webhook as (prediction id, state).

    docs.eachlabs.ai/api/webhooks/payload-reference: `{exec_id, flow_id, status, output, error}`,
    `exec_id` being the `predictionID` create answered and `status` succeeded | failed; on
    failure `output` is `[{..., "error": reason}]` and the top-level `error` is empty.
    """
    payload = _object(body)
    prediction_id = _id(payload, "exec_id")
    status, output = payload.get("status"), payload.get("output")
    if status == "succeeded":
        try:
            return prediction_id, prediction_state({"status": "success", "output": output})
        except ProviderError as error:
            raise ValueError(error.message) from None
    if status == "failed":
        first = output[0] if isinstance(output, list) and output else None
        reason = first.get("error") if isinstance(first, dict) else None
        message = str(reason or payload.get("error") or "the prediction failed at each::labs")
        return prediction_id, RunState(RunStatus.FAILED, error=failure(message))
    raise ValueError("status is not succeeded or failed")
