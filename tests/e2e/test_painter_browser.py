"""The mask painter in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium paints a stroke with the mouse and submits; the host must receive a mask
that is white exactly along the stroke, and the result must reach the channel. A touch stroke
at a phone's width must paint too. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.interaction import POINTER_TOUCH
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import buttons, has_image, text
from tests.e2e.test_hosts import free_port
from tests.e2e.test_painter import mask_received, paint_link
from tests.fakes.discord import FakeDiscord, walk_components
from tests.fakes.runflow import FakeRunflow

PORT = free_port()
PUBLIC = {"RETOUCH_WEB__PORT": str(PORT), "RETOUCH_WEB__PUBLIC_URL": f"http://127.0.0.1:{PORT}"}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SIZE = (480, 320)
STROKE = ((120, 160), (360, 160))  # in the picture's pixels
BRUSH = 24  # the page's default size: 24/400 of the longer side, here 28.8 pixels across


def landscape() -> bytes:
    """A picture worth looking at in the screenshot: sky, sun, hills."""
    image = Image.new("RGB", SIZE, (120, 180, 235))
    draw = ImageDraw.Draw(image)
    for y in range(SIZE[1] // 2):
        draw.line([(0, y), (SIZE[0], y)], fill=(90 + y // 3, 160 + y // 4, 235))
    draw.ellipse((340, 40, 400, 100), fill=(255, 220, 120))
    draw.polygon([(0, 230), (140, 150), (300, 240), (480, 170), (480, 320), (0, 320)], fill=(70, 140, 80))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def binaries() -> tuple[str, str]:
    """Chromium and its driver from the system; in CI their absence fails the test, never skips it."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        message = "chromium and chromedriver are needed: apt-get install chromium chromium-driver"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def screen_point(driver: webdriver.Chrome, x: float, y: float) -> tuple[int, int]:
    """Where a pixel of the picture is on the screen, as the page has fitted it."""
    box: dict[str, float] = driver.execute_script(
        "const b = document.getElementById('mask').getBoundingClientRect();"
        "return {left: b.left, top: b.top, width: b.width, height: b.height};"
    )
    return (
        round(box["left"] + x * box["width"] / SIZE[0]),
        round(box["top"] + y * box["height"] / SIZE[1]),
    )


def stroke(driver: webdriver.Chrome, pointer: PointerInput | None = None) -> None:
    """A stroke from STROKE's start to its end, in small steps as a hand moves."""
    actions = ActionBuilder(driver, mouse=pointer) if pointer else ActionBuilder(driver)
    action = actions.pointer_action
    (x0, y0), (x1, y1) = STROKE
    action.move_to_location(*screen_point(driver, x0, y0))
    action.pointer_down()
    for step in range(1, 11):
        action.move_to_location(*screen_point(driver, x0 + (x1 - x0) * step / 10, y0 + (y1 - y0) * step / 10))
    action.pointer_up()
    actions.perform()


def open_page(driver: webdriver.Chrome, link: str) -> None:
    driver.get(link)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.dataset.ready"))


def paint_and_submit(driver: webdriver.Chrome, link: str) -> str:
    open_page(driver, link)
    stroke(driver)
    prompt = driver.find_element(By.ID, "prompt")
    assert prompt.get_attribute("value") == "a river"  # from /edit, prefilled
    prompt.send_keys(" through the hills")
    driver.find_element(By.ID, "quality").send_keys("Medium")
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "painter.png"))
    driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.outcome"))
    outcome: str = driver.execute_script("return document.body.dataset.outcome")
    if outcome == "queued":
        WebDriverWait(driver, 20).until(
            lambda d: d.execute_script("return document.body.dataset.outcome") != "queued"
        )
    driver.save_screenshot(str(ARTIFACTS / "painter-done.png"))
    return str(driver.execute_script("return document.body.dataset.outcome"))


def touch_at_phone_width(driver: webdriver.Chrome, link: str) -> dict[str, Any]:
    driver.set_window_size(390, 844)
    open_page(driver, link)
    stroke(driver, PointerInput(POINTER_TOUCH, "finger"))
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "painter-phone.png"))
    found: dict[str, Any] = driver.execute_script(
        "const m = document.getElementById('mask');"
        "const px = m.getContext('2d').getImageData(0, 0, m.width, m.height).data;"
        "let painted = 0; for (let i = 3; i < px.length; i += 4) if (px[i] >= 128) painted++;"
        "const submit = document.getElementById('submit').getBoundingClientRect();"
        "return {painted, overflow: document.documentElement.scrollWidth - window.innerWidth,"
        " submitRight: submit.right, width: window.innerWidth};"
    )
    return found


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_a_stroke_painted_in_the_browser_is_the_mask_the_host_gets_and_the_result_reaches_the_channel(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow, browser: webdriver.Chrome
) -> None:
    started = await discord_fake.slash(
        "edit", prompt="a river", image=discord_fake.add_cdn_file(landscape(), "hills.png"), paint=True
    )
    answer = await started.wait_response()
    link = next(c["url"] for c in walk_components(answer["data"]["components"]) if c.get("url"))

    outcome = await asyncio.to_thread(paint_and_submit, browser, link)
    assert outcome == "done"
    painted = await discord_fake.wait_for_message(lambda m: has_image(m) and "a river" in text(m))
    assert painted["channel_id"] == str(discord_fake.channel_id)
    assert "Paint" in buttons(painted)
    href = browser.find_element(By.ID, "result-link").get_attribute("href")
    assert href is not None and href.endswith(f"/{painted['id']}")

    mask = await mask_received(runflow)
    assert mask.size == SIZE
    (x0, y), (x1, _) = STROKE
    radius = BRUSH * max(SIZE) / 400 / 2
    assert mask.getpixel(((x0 + x1) // 2, y)) == 255
    assert mask.getpixel((x0, y)) == 255 and mask.getpixel((x1, y)) == 255
    white = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
    assert white is not None
    expected = (x0 - radius, y - radius, x1 + radius, y + radius)
    # The stroke's box, within the 2 pixels screen-to-picture rounding can move it.
    assert all(abs(got - want) <= 3 for got, want in zip(white, expected, strict=True)), (white, expected)

    fresh = await paint_link(discord_fake, painted)
    phone = await asyncio.to_thread(touch_at_phone_width, browser, fresh)
    assert phone["painted"] > 0, "a touch stroke painted nothing"
    assert phone["overflow"] <= 0 and phone["submitRight"] <= phone["width"]
