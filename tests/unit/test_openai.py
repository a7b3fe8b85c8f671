"""The OpenAI Images edits client against the loopback fake that follows OpenAI's documented API."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps
from pydantic import SecretStr

from bot.pictures.sizes import RESOLUTIONS
from bot.providers.base import (
    AuthFailed,
    ContentRejected,
    EditRequest,
    ImageRef,
    InvalidRequest,
    ProviderError,
    RateLimited,
    Run,
    RunFailed,
    RunStatus,
    Unavailable,
)
from bot.providers.openai import (
    SIZES,
    OpenAIProvider,
    _edit_result,
    _masked_pair,
)
from bot.providers.payloads import token_usd_micros
from bot.providers.settings import OpenAISettings, TokenPrices
from tests.conftest import StaticFiles
from tests.fakes.openai import USAGE, FakeOpenAI
from tests.images import decode, png


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def provider(fake: FakeOpenAI, session: aiohttp.ClientSession) -> OpenAIProvider:
    # Room for the fake to make a 4K picture on a busy machine; the timeout test has its own.
    return provider_for(fake, session, request_timeout=30.0)


def provider_for(
    fake: FakeOpenAI, session: aiohttp.ClientSession, *, request_timeout: float
) -> OpenAIProvider:
    settings = OpenAISettings(
        api_key=SecretStr(fake.api_key), base_url=fake.base_url, request_timeout=request_timeout
    )
    return OpenAIProvider(settings, session)


def request(*images: ImageRef, **overrides: object) -> EditRequest:
    fields: dict[str, object] = {"job_id": 3, "prompt": "make it blue", "images": list(images)}
    fields.update(overrides)
    return EditRequest(**fields)  # type: ignore[arg-type]


def mask_png(width: int, height: int) -> bytes:
    """White (edit) on the left half, black (keep) on the right, no alpha."""
    image = Image.new("L", (width, height), 0)
    image.paste(255, (0, 0, width // 2, height))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def test_edit_downloads_references_and_sends_multipart(
    provider: OpenAIProvider, fake: FakeOpenAI, static_files: StaticFiles
) -> None:
    first, second = png(64, 48, (10, 20, 30)), png(32, 32)
    edit = request(
        ImageRef("a.png", url=static_files.add("a.png", first)),
        ImageRef("b.png", url=static_files.add("b.png", second)),
        mask=ImageRef("m.png", url=static_files.add("m.png", mask_png(32, 24))),
        count=2,
        quality="low",
        image_size="landscape_16_9",
        output_format="webp",
    )
    run = await provider.submit(edit)
    received = fake.edits[0]
    assert received.fields == {
        "model": "gpt-image-2",
        "prompt": "make it blue",
        "n": "2",
        "size": "1536x1024",
        "quality": "low",
        "output_format": "webp",
    }
    assert [name for name, _, _ in received.images] == ["a.png", "b.png"]
    assert decode(received.images[0][2]).tobytes() == decode(first).tobytes()  # re-encoded, same pixels
    assert received.images[1][2] == second
    assert received.mask is not None
    mask = decode(received.mask)
    assert mask.format == "PNG" and mask.size == (64, 48)
    assert mask.getchannel("A").getpixel((0, 0)) == 0 and mask.getchannel("A").getpixel((63, 0)) == 255

    state = await provider.status(run)
    assert state.status is RunStatus.SUCCEEDED and state.result is not None
    images = state.result.images
    assert len(images) == 2 and images[0].content_type == "image/webp"
    assert images[0].data is not None
    output = decode(images[0].data)
    assert (output.format, output.size) == ("WEBP", (64, 48))
    assert (images[0].width, images[0].height) == (64, 48)
    text_in, image_in, image_out = USAGE
    assert state.result.usd_micros == text_in * 5 + image_in * 2 * 8 + image_out * 2 * 30
    assert state.result.duration_ms is not None
    assert (await provider.result(run)) is state.result


async def test_inline_bytes_need_no_download(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    await provider.submit(request(ImageRef("a.png", data=png())))
    assert fake.edits[0].images[0][2] == png()


@pytest.mark.parametrize(("preset", "size"), sorted(SIZES.items()))
async def test_image_size_maps_to_openai_sizes(
    preset: str, size: str, provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    await provider.submit(request(ImageRef("a.png", data=png()), image_size=preset))
    assert fake.edits[0].fields["size"] == size


async def test_a_size_above_1k_is_sent_as_width_x_height(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    assert provider.resolutions == frozenset(RESOLUTIONS)
    edit = request(ImageRef("a.png", data=png()), image_size="landscape_16_9", resolution="4K")
    run = await provider.submit(replace(edit, dimensions=(3840, 2160)))
    assert fake.edits[0].fields["size"] == "3840x2160"
    [image] = (await provider.result(run)).images
    assert (image.width, image.height) == (3840, 2160)
    assert image.data is not None and decode(image.data).size == (3840, 2160)


@pytest.mark.parametrize(
    ("dimensions", "problem"),
    [
        ((2000, 1000), "multiples of 16"),
        ((3856, 1296), "long edge"),
        ((3840, 3840), "pixels"),
        ((2400, 784), "aspect ratio"),
        ((800, 800), "pixels"),
    ],
)
async def test_a_size_the_model_cannot_make_is_invalid(
    dimensions: tuple[int, int], problem: str, provider: OpenAIProvider
) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        await provider.submit(request(ImageRef("a.png", data=png()), resolution="2K", dimensions=dimensions))


async def test_unreachable_reference_is_invalid(provider: OpenAIProvider, static_files: StaticFiles) -> None:
    with pytest.raises(InvalidRequest, match="could not be fetched"):
        await provider.submit(request(ImageRef("gone.png", url=f"{static_files.base_url}/gone.png")))


async def test_oversized_reference_is_refused_while_streaming(
    provider: OpenAIProvider, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.providers.openai.MAX_IMAGE_BYTES", 100)
    with pytest.raises(InvalidRequest, match="larger than"):
        await provider.submit(request(ImageRef("a.png", url=static_files.add("a.png", png()))))


async def test_safety_refusal_is_content_rejected(provider: OpenAIProvider) -> None:
    with pytest.raises(ContentRejected) as caught:
        await provider.submit(request(ImageRef("a.png", data=png()), prompt="something forbidden"))
    assert caught.value.code == "moderation_blocked"


async def test_legacy_content_policy_code_is_content_rejected(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    body = {"error": {"message": "no", "type": "invalid_request_error", "code": "content_policy_violation"}}
    fake.fail_next("POST", "/v1/images/edits", 400, body)
    with pytest.raises(ContentRejected):
        await provider.submit(request(ImageRef("a.png", data=png())))


async def test_insufficient_quota_is_auth_failed_not_rate_limited(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    fake.out_of_quota = True
    with pytest.raises(AuthFailed) as caught:
        await provider.submit(request(ImageRef("a.png", data=png())))
    assert caught.value.code == "insufficient_quota"


async def test_rate_limit_carries_retry_after(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.rate_limit_next("POST", "/v1/images/edits", retry_after=3)
    with pytest.raises(RateLimited) as caught:
        await provider.submit(request(ImageRef("a.png", data=png())))
    assert caught.value.retry_after == 3 and caught.value.code == "rate_limit_exceeded"


async def test_wrong_key_is_auth_failed(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    bad = OpenAIProvider(OpenAISettings(api_key=SecretStr("sk-wrong"), base_url=fake.base_url), session)
    with pytest.raises(AuthFailed):
        await bad.submit(request(ImageRef("a.png", data=png())))


async def test_bad_input_is_invalid_request(provider: OpenAIProvider) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await provider.submit(request(ImageRef("a.png", data=png()), quality="ultra"))
    assert "quality" in caught.value.message


@pytest.mark.parametrize("fault", ["500", "malformed", "reset", "timeout"])
async def test_outages_are_unavailable(
    fault: str, provider: OpenAIProvider, fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    if fault == "500":
        fake.fail_next("POST", "/v1/images/edits", 500)
    elif fault == "malformed":
        fake.fail_next("POST", "/v1/images/edits", 200, b'{"data": [')
    elif fault == "reset":
        fake.reset_next("POST", "/v1/images/edits")
    else:
        fake.hang_next("POST", "/v1/images/edits", 5.0)
        provider = provider_for(fake, session, request_timeout=1.0)
    with pytest.raises(Unavailable):
        await provider.submit(request(ImageRef("a.png", data=png())))


async def test_reply_without_images_is_run_failed(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.empty_output = True
    with pytest.raises(RunFailed):
        await provider.submit(request(ImageRef("a.png", data=png())))


async def test_slow_edit_holds_submit_until_done(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    fake.hold = True
    submitting = asyncio.create_task(provider.submit(request(ImageRef("a.png", data=png()))))
    await fake.wait_until(lambda: fake.waiting() or None, "the edit to start")
    assert not submitting.done()
    fake.release()
    run = await submitting
    assert (await provider.status(run)).status is RunStatus.SUCCEEDED


async def test_a_run_lost_to_a_restart_fails_and_cancel_is_a_no_op(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    settings = OpenAISettings(api_key=SecretStr(fake.api_key), base_url=fake.base_url)
    restarted = OpenAIProvider(settings, session)
    run = Run("openai", "openai-3-000000000000")
    state = await restarted.status(run)
    assert state.status is RunStatus.FAILED and isinstance(state.error, RunFailed)
    assert state.error.code == "lost_on_restart"
    with pytest.raises(RunFailed):
        await restarted.result(run)
    assert await restarted.cancel(run) is False


async def test_alpha_masks_are_kept_and_opaque_masks_read_white_as_edit() -> None:
    first = png(8, 8)
    painted = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
    painted.putpixel((1, 1), (0, 0, 0, 0))
    buffer = io.BytesIO()
    painted.save(buffer, "PNG")
    kept = decode(_masked_pair(first, buffer.getvalue())[1]).getchannel("A")
    assert kept.getpixel((1, 1)) == 0 and kept.getpixel((2, 2)) == 255

    converted = decode(_masked_pair(first, mask_png(8, 8))[1]).getchannel("A")
    assert converted.getpixel((0, 0)) == 0 and converted.getpixel((7, 7)) == 255
    assert ImageOps.invert(converted).getbbox() == (0, 0, 4, 8)


async def test_unreadable_mask_is_invalid() -> None:
    with pytest.raises(InvalidRequest):
        _masked_pair(png(), b"not an image")


@pytest.mark.parametrize(
    ("usage", "micros"),
    [
        (
            {
                "input_tokens_details": {"text_tokens": 10, "image_tokens": 20},
                "output_tokens_details": {"text_tokens": 3, "image_tokens": 4},
            },
            10 * 5 + 20 * 8 + 3 * 10 + 4 * 30,
        ),
        ({"input_tokens": 100, "output_tokens": 1000}, 100 * 8 + 1000 * 30),
        ({"input_tokens": 10**20, "output_tokens": True}, None),
        ({}, None),
        ("nonsense", None),
    ],
)
def test_token_cost(usage: object, micros: int | None) -> None:
    assert token_usd_micros(usage, OpenAISettings().token_prices) == micros


def test_token_cost_uses_the_hosts_prices() -> None:
    prices = TokenPrices(text_in=1, image_in=2, text_out=3, image_out=4.5)
    assert token_usd_micros({"input_tokens": 2, "output_tokens": 2}, prices) == 13


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
REPLY = st.fixed_dictionaries(
    {
        "data": st.lists(st.fixed_dictionaries({"b64_json": st.text(max_size=12) | JSON}) | JSON, max_size=3)
        | JSON
    },
    optional={
        "output_format": JSON,
        "size": st.sampled_from(["1024x1536", "x", "12x"]) | JSON,
        "usage": JSON,
    },
)


@settings(max_examples=200)
@given(reply=REPLY | JSON)
def test_any_reply_is_an_edit_result_or_a_provider_error(reply: object) -> None:
    with contextlib.suppress(ProviderError):
        _edit_result(reply, TokenPrices())


def test_a_size_in_other_scripts_digits_is_unknown_not_an_error() -> None:
    """str.isdigit() takes "²", which int() refuses; the reply's size is outside text."""
    from bot.providers.openai import _dimensions

    assert _dimensions("²x1024") == (None, None)
    assert _dimensions("1536x1024") == (1536, 1024)
