"""OpenAI's documented payloads fed to the OpenAI client, and the guide's image/mask rule.

Sources (facts copied, prose not):
- reply fields: openai/openai-python `src/openai/types/images_response.py` @e43b4224
  (`created`, `data[].b64_json`, `background`, `output_format`, `quality`, `size`, `usage` with
  `input_tokens_details` and `output_tokens_details`, each `{image_tokens, text_tokens}`),
- mask: `src/openai/types/image_edit_params.py` @e43b4224 ("fully transparent areas ... indicate
  where `image` should be edited ... applied on the first image ... valid PNG file, less than
  4MB, and have the same dimensions as `image`") and the image-generation guide
  (https://platform.openai.com/docs/guides/image-generation): the image to edit and the mask
  "must be of the same format and size",
- error envelope `{"error": {"message", "type", "param", "code"}}` and the safety refusal
  `moderation_blocked` (shared/providers.md section 2; the refusal's exact wording unverified),
- gpt-image-2 prices per 1M tokens: text in $5 (cached $1.25), image in $8 (cached $2), image out
  $30, text out $10. OpenAI's own model page was not retrievable; these agree across fal's model
  page (https://fal.ai/models/openai/gpt-image-2/edit) and pages quoting OpenAI's pricing page.
The reply below is built from the documented fields (the reference's example elides `b64_json`,
so a real base64 PNG stands in for it).
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr

from bot.providers.base import AuthFailed, ContentRejected, EditRequest, ImageRef, InvalidRequest
from bot.providers.openai import OpenAIProvider
from bot.providers.payloads import token_usd_micros
from bot.providers.settings import OpenAISettings, TokenPrices
from tests.fakes.openai import FakeOpenAI
from tests.images import decode, png

PUBLISHED = {"text_in": 5.0, "image_in": 8.0, "text_out": 10.0, "image_out": 30.0}


def documented_reply() -> dict[str, Any]:
    return {
        "created": 1713833628,
        "data": [{"b64_json": base64.b64encode(png(64, 48)).decode()}],
        "background": "opaque",
        "output_format": "png",
        "quality": "high",
        "size": "1024x1024",
        "usage": {
            "total_tokens": 100,
            "input_tokens": 50,
            "output_tokens": 50,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
            "output_tokens_details": {"text_tokens": 0, "image_tokens": 50},
        },
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def settings_for(fake: FakeOpenAI, **overrides: Any) -> OpenAISettings:
    return OpenAISettings(
        api_key=SecretStr(fake.api_key), base_url=fake.base_url, request_timeout=5.0, **overrides
    )


@pytest.fixture
async def provider(fake: FakeOpenAI) -> AsyncIterator[OpenAIProvider]:
    async with aiohttp.ClientSession() as session:
        yield OpenAIProvider(settings_for(fake), session)


def edit(*images: ImageRef, **overrides: Any) -> EditRequest:
    return EditRequest(job_id=1, prompt="make it blue", images=list(images), **overrides)


def encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def half_mask(width: int, height: int) -> bytes:
    """White (may change) on the left half, black elsewhere, as members draw it."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (0, 0, width // 2, height))
    return encoded(mask, "PNG")


async def test_documented_reply_is_read_and_priced_at_published_rates(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    fake.fail_next("POST", r"^/v1/images/edits$", 200, documented_reply())
    run = await provider.submit(edit(ImageRef("a.png", data=png())))
    result = await provider.result(run)
    [image] = result.images
    assert image.data == png(64, 48) and image.content_type == "image/png"
    assert (image.width, image.height) == (1024, 1024)
    assert result.usd_micros == 10 * 5 + 40 * 8 + 0 * 10 + 50 * 30


def test_default_token_prices_are_the_published_gpt_image_2_prices() -> None:
    assert OpenAISettings().token_prices.model_dump() == PUBLISHED


async def test_token_prices_come_from_the_owners_config(fake: FakeOpenAI) -> None:
    prices = TokenPrices(text_in=1, image_in=2, text_out=3, image_out=4)
    async with aiohttp.ClientSession() as session:
        provider = OpenAIProvider(settings_for(fake, token_prices=prices), session)
        fake.fail_next("POST", r"^/v1/images/edits$", 200, documented_reply())
        result = await provider.result(await provider.submit(edit(ImageRef("a.png", data=png()))))
    assert result.usd_micros == token_usd_micros(documented_reply()["usage"], prices) == 10 + 80 + 200


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (
            400,
            {
                "message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error",
                "param": None,
                "code": "moderation_blocked",
            },
            ContentRejected,
        ),
        (
            400,
            {
                "message": "The image to edit and the mask must be of the same format and size.",
                "type": "invalid_request_error",
                "param": "mask",
                "code": None,
            },
            InvalidRequest,
        ),
        (
            429,
            {
                "message": "You exceeded your current quota.",
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_quota",
            },
            AuthFailed,
        ),
    ],
)
async def test_documented_error_bodies_are_typed(
    status: int, error: dict[str, Any], kind: type[Exception], provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    fake.fail_next("POST", r"^/v1/images/edits$", status, {"error": error})
    with pytest.raises(kind):
        await provider.submit(edit(ImageRef("a.png", data=png())))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
async def test_a_masked_first_image_goes_as_a_png_of_the_masks_size(
    fmt: str, provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    """The guide: image and mask must be of the same format and size; a JPEG with a PNG mask is a
    400 that no other host would answer differently, so the member's edit would simply fail."""
    first = encoded(Image.new("RGB", (64, 48), (10, 200, 30)), fmt)
    await provider.submit(
        edit(
            ImageRef("a.jpg", data=first, content_type=f"image/{fmt.lower()}"),
            ImageRef("b.png", data=png(32, 32)),
            mask=ImageRef("m.png", data=half_mask(64, 48)),
        )
    )
    [received] = fake.edits
    (name, content_type, sent), (_, _, second) = received.images
    assert received.mask is not None
    image, mask = decode(sent), decode(received.mask)
    assert (image.format, image.size, content_type) == ("PNG", (64, 48), "image/png")
    assert name == "a.png" and (mask.format, mask.size) == ("PNG", (64, 48))
    assert image.convert("RGB").tobytes() == decode(first).convert("RGB").tobytes()  # same pixels
    assert second == png(32, 32)  # only the image the mask applies to is converted


async def test_an_exif_turned_first_image_goes_upright_with_its_mask(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    """Stored 64x48 but shown 48x64: the mask is drawn on what the member sees."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    first = encoded(Image.new("RGB", (64, 48), (10, 200, 30)), "JPEG", exif=exif)
    await provider.submit(
        edit(
            ImageRef("a.jpg", data=first, content_type="image/jpeg"),
            mask=ImageRef("m.png", data=half_mask(48, 64)),
        )
    )
    [received] = fake.edits
    assert received.mask is not None
    assert decode(received.images[0][2]).size == decode(received.mask).size == (48, 64)


async def test_without_a_mask_images_go_as_they_are(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    first = encoded(Image.new("RGB", (64, 48)), "JPEG")
    await provider.submit(edit(ImageRef("a.jpg", data=first, content_type="image/jpeg")))
    assert fake.edits[0].images == [("a.jpg", "image/jpeg", first)]


@pytest.mark.parametrize(
    ("first", "mask"),
    [
        (encoded(Image.new("RGB", (64, 48)), "JPEG"), half_mask(64, 48)),
        (png(64, 48), half_mask(48, 64)),
    ],
)
async def test_the_fake_refuses_an_image_and_mask_of_another_format_or_size(
    first: bytes, mask: bytes, fake: FakeOpenAI
) -> None:
    alpha = encoded(Image.open(io.BytesIO(mask)).convert("LA"), "PNG")
    form = aiohttp.FormData()
    for name, value in {"model": "gpt-image-2", "prompt": "p"}.items():
        form.add_field(name, value)
    form.add_field("image[]", first, filename="a", content_type="application/octet-stream")
    form.add_field("mask", alpha, filename="mask.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.base_url}/v1/images/edits", data=form, headers={"Authorization": f"Bearer {fake.api_key}"}
        ) as reply,
    ):
        assert reply.status == 400
        error = (await reply.json())["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "mask")
