"""fal's documented payloads fed to the fal client, and the documented input rules it must keep.

Sources (facts copied, prose not):
- model input/output: https://fal.ai/models/openai/gpt-image-2/edit/llms.txt (field list: `prompt`
  minLength 2 / maxLength 32000, `image_urls`, `mask_url`, `image_size` preset or
  `{width, height}`, `quality`, `num_images` 1-4, `output_format`; output `images[]` of
  `{url, content_type, file_name, file_size, width, height}`),
- queue: https://fal.ai/docs/model-endpoints/queue (submit, status, result replies),
- webhooks: https://docs.fal.ai/model-endpoints/webhooks (the two delivery examples below),
- errors: https://fal.ai/docs/model-apis/errors (`detail[]` of `loc`/`msg`/`type`, 422).
No verbatim example of the model's output or of a queue reply could be retrieved, so those two
are built strictly from the documented field lists; the webhook bodies are the documented examples.
Documented URLs point at fal; they are moved onto the loopback fake, nothing else changes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bot.pictures.sizes import IMAGE_SIZES, dimensions
from bot.pictures.validation import prompt_problem
from bot.providers.base import EditRequest, ImageRef, InvalidRequest, RunStatus
from bot.providers.fal import FalProvider
from bot.providers.fal import parse_callback as parse_fal_webhook
from bot.providers.settings import FalSettings
from tests.fakes.fal import FakeFal

DOCUMENTED_INPUT_FIELDS = {
    "prompt",
    "image_urls",
    "mask_url",
    "image_size",
    "quality",
    "num_images",
    "output_format",
    "sync_mode",
}

# https://docs.fal.ai/model-endpoints/webhooks: a successful delivery (payload = the model output).
WEBHOOK_OK = {
    "request_id": "123e4567-e89b-12d3-a456-426614174000",
    "gateway_request_id": "123e4567-e89b-12d3-a456-426614174000",
    "status": "OK",
    "payload": {
        "images": [
            {
                "url": "https://url.to/image.png",
                "content_type": "image/png",
                "file_name": "image.png",
                "file_size": 1824075,
                "width": 1024,
                "height": 1024,
            }
        ],
        "seed": 196619188014358660,
    },
}
# Same page: a failed delivery carrying the model's validation error.
WEBHOOK_ERROR = {
    "request_id": "123e4567-e89b-12d3-a456-426614174000",
    "gateway_request_id": "123e4567-e89b-12d3-a456-426614174000",
    "status": "ERROR",
    "error": "Invalid status code: 422",
    "payload": {
        "detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]
    },
}


@pytest.fixture
async def fal() -> AsyncIterator[FakeFal]:
    async with FakeFal() as server:
        yield server


@pytest.fixture
async def provider(fal: FakeFal) -> AsyncIterator[FalProvider]:
    async with aiohttp.ClientSession() as session:
        yield FalProvider(
            FalSettings(api_key=SecretStr(fal.api_key), base_url=fal.base_url, request_timeout=1.0), session
        )


def edit(**overrides: Any) -> EditRequest:
    fields: dict[str, Any] = {
        "job_id": 1,
        "prompt": "make the sky stormy",
        "images": [ImageRef("a.png", url="http://127.0.0.1:9/a.png")],
    }
    fields.update(overrides)
    return EditRequest(**fields)


def test_documented_success_webhook_is_a_finished_edit() -> None:
    request_id, state = parse_fal_webhook(json.dumps(WEBHOOK_OK).encode())
    assert request_id == WEBHOOK_OK["request_id"]
    assert state.status is RunStatus.SUCCEEDED and state.result is not None
    [image] = state.result.images
    assert (image.url, image.content_type, image.width, image.height) == (
        "https://url.to/image.png",
        "image/png",
        1024,
        1024,
    )
    assert state.result.seed == 196619188014358660 and not state.result.nsfw


def test_documented_error_webhook_is_an_invalid_request_not_an_outage() -> None:
    _, state = parse_fal_webhook(json.dumps(WEBHOOK_ERROR).encode())
    assert state.status is RunStatus.FAILED
    assert isinstance(state.error, InvalidRequest) and state.error.code == "value_error.missing"


async def test_documented_queue_replies_and_output_are_read(provider: FalProvider, fal: FakeFal) -> None:
    """Submit, status and result replies built from the documented fields (no verbatim example)."""
    base = f"{fal.base_url}/openai/gpt-image-2/requests/764cabcf-b745-4b3e-ae38-1200304cf45b"
    fal.fail_next(
        "POST",
        r"^/openai/gpt-image-2/edit$",
        200,
        {
            "request_id": "764cabcf-b745-4b3e-ae38-1200304cf45b",
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        },
    )
    run = await provider.submit(edit())
    assert run.run_id == "764cabcf-b745-4b3e-ae38-1200304cf45b"
    fal.fail_next("GET", r"/status$", 202, {"status": "IN_QUEUE", "queue_position": 0, "response_url": base})
    assert (await provider.status(run)).queue_position == 0
    fal.fail_next("GET", r"/status$", 200, {"status": "COMPLETED", "response_url": base, "logs": None})
    output = {
        "images": [
            {
                "url": f"{fal.base_url}/files/edited.png",
                "content_type": "image/png",
                "file_name": "edited.png",
                "file_size": 1824075,
                "width": 1024,
                "height": 768,
            }
        ]
    }
    fal.fail_next("GET", r"45b$", 200, output)
    state = await provider.status(run)
    assert state.status is RunStatus.SUCCEEDED and state.result is not None
    [image] = state.result.images
    assert (image.width, image.height, image.content_type) == (1024, 768, "image/png")
    # fal's output lists no token usage: spend falls back to the owner's per-image price.
    assert state.result.usd_micros is None


async def test_the_input_sent_uses_only_documented_fields(provider: FalProvider, fal: FakeFal) -> None:
    mask = ImageRef("m.png", url="http://127.0.0.1:9/m.png")
    await provider.submit(edit(mask=mask, count=4, quality="low", output_format="webp"))
    sent = fal.order[0].input
    assert set(sent) <= DOCUMENTED_INPUT_FIELDS
    assert sent["mask_url"] == "http://127.0.0.1:9/m.png"
    assert 2 <= len(sent["prompt"]) <= 32_000 and 1 <= sent["num_images"] <= 4


@pytest.mark.parametrize("image_size", [size for size in IMAGE_SIZES if size != "auto"])
async def test_every_size_choice_goes_as_an_explicit_size_within_the_limits(
    image_size: str, provider: FalProvider, fal: FakeFal
) -> None:
    """fal's `square` is 512x512 and its 16:9 presets 1024x576, under gpt-image-2's minimum."""
    sized = edit(image_size=image_size, dimensions=dimensions(image_size, "1K", None))
    await provider.submit(sized)
    sent = fal.order[0].input["image_size"]
    assert isinstance(sent, dict) and set(sent) == {"width", "height"}
    assert sent["width"] * sent["height"] >= 655_360


@pytest.mark.parametrize("image_size", ["square", "landscape_16_9", "portrait_16_9", "square_hd"])
async def test_a_preset_without_worked_out_dimensions_still_goes_as_an_explicit_size(
    image_size: str, provider: FalProvider, fal: FakeFal
) -> None:
    """The command-line edit has no first-image size; it must not fall back to fal's presets."""
    await provider.submit(edit(image_size=image_size))
    assert fal.order[0].input["image_size"] == dict(
        zip(("width", "height"), dimensions(image_size, "1K", None), strict=True)
    )


async def test_auto_without_a_known_shape_is_left_to_the_model(provider: FalProvider, fal: FakeFal) -> None:
    await provider.submit(edit(image_size="auto"))
    assert fal.order[0].input["image_size"] == "auto"


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_size", "square"), ("image_size", "landscape_16_9"), ("prompt", "a")],
)
async def test_the_fake_refuses_what_fal_documents_as_invalid(
    field: str, value: str, fal: FakeFal, provider: FalProvider
) -> None:
    body = {"prompt": "make it blue", "image_urls": ["http://127.0.0.1:9/a.png"], field: value}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fal.base_url}/openai/gpt-image-2/edit",
            json=body,
            headers={"Authorization": f"Key {fal.api_key}"},
        ) as reply,
    ):
        assert reply.status == 422
        detail = (await reply.json())["detail"]
    assert [entry["loc"] for entry in detail] == [["body", field]]


@pytest.mark.parametrize("prompt", ["a", " a ", "é", "\u200b"])
def test_a_prompt_under_fals_two_character_minimum_is_refused_before_queueing(prompt: str) -> None:
    problem = prompt_problem(prompt)
    assert problem is not None and "character" in problem


def test_a_two_character_prompt_is_accepted() -> None:
    assert prompt_problem("ok") is None
