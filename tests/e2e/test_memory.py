"""The memory bound, measured on a real `python -m bot run` process under the issue's load.

Three members each `/edit` with four small files that decode to 40 megapixels (the most the
bot accepts): 16-bit grey PNGs of about 90 KiB, CMYK JPEGs, and a 16-bit grey mask. Before the
memory budget, this took the process from ~160 MB to ~1.75 GB in seconds.
"""

from __future__ import annotations

import asyncio
import functools
import io
import signal
from pathlib import Path

from PIL import Image

from tests.e2e.conftest import BotProcess, env_for
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.postgres import bot_store_url
from tests.reliability.harness import FINAL_STATES, read_jobs

SIZE = (8000, 5000)  # 40 MP, within 8192 on a side: the largest picture the bot accepts
BOUND = 500_000_000
EDITS = 3


@functools.cache
def grey16_png(mask: bool = False) -> bytes:
    image = Image.new("I;16", SIZE, 30_000)
    if mask:
        image.paste(65_535, (0, 0, SIZE[0] // 2, SIZE[1]))  # the left half may change
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@functools.cache
def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", SIZE, (0, 200, 200, 0)).save(buffer, "JPEG")
    return buffer.getvalue()


def status(pid: int) -> dict[str, int]:
    """The child's VmRSS and VmHWM in bytes, from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


async def test_three_edits_of_forty_megapixel_files_stay_within_idle_plus_500_mb(
    discord_fake: FakeDiscord, runflow: FakeRunflow, tmp_path: Path
) -> None:
    files = [grey16_png(), cmyk_jpeg(), grey16_png(), cmyk_jpeg()]
    mask = grey16_png(mask=True)
    assert max(map(len, [*files, mask])) < 2_000_000  # small files, large pictures
    bot = BotProcess(env_for(discord_fake, runflow, tmp_path), tmp_path / "bot.log")
    await bot.start()
    try:
        assert bot.process is not None
        pid = bot.process.pid
        await discord_fake.wait_ready(timeout=30)
        idle = status(pid)["VmRSS"]
        members = [discord_fake.add_member(f"member {n}") for n in range(EDITS)]
        await asyncio.gather(
            *(
                discord_fake.slash(
                    "edit",
                    user=member,
                    prompt=f"edit {n}",
                    image=discord_fake.add_cdn_file(files[0], "grey.png"),
                    image2=discord_fake.add_cdn_file(files[1], "print.jpg"),
                    image3=discord_fake.add_cdn_file(files[2], "grey.png"),
                    image4=discord_fake.add_cdn_file(files[3], "print.jpg"),
                    mask=discord_fake.add_cdn_file(mask, "mask.png"),
                )
                for n, member in enumerate(members)
            )
        )
        async with asyncio.timeout(90):
            while True:  # the rows are the bot's to write, and no fake sees them: poll
                jobs = read_jobs(bot_store_url() or tmp_path / "retouch.db")
                if len(jobs) == EDITS and all(job.state in FINAL_STATES for job in jobs.values()):
                    break
                await asyncio.sleep(0.2)
        peak = status(pid)["VmHWM"]
        # Every input was decoded and converted: each job got as far as the host, which refuses
        # inputs sent as bytes rather than links (and sides over 4096 pixels).
        assert bot.log().count("failed at runflow") == EDITS, bot.log()[-3000:]
    finally:
        await bot.terminate(signal.SIGKILL)
    # Measured: 1,639 MB above idle before the budget, 336 MB with it (75 MB idle).
    assert peak - idle <= BOUND, f"peak {peak / 1e6:.0f} MB is {(peak - idle) / 1e6:.0f} MB above idle"
