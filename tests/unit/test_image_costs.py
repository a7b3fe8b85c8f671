"""The memory estimates against what the work really holds, measured in a fresh process.

Each case runs in one child interpreter, one after another, with the allocator set as the bot
sets it; the peak (VmHWM, reset before each case) above the RSS before the call must not
exceed the estimate, and the estimate must not be so generous that the budget idles.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.e2e.conftest import ROOT

CHILD = textwrap.dedent(
    """
    import gc, io, json, os
    from PIL import Image
    from bot.pictures import image_costs, images, masks, memory

    memory.configure(memory.DEFAULT_BYTES)
    SIZE = (2400, 1500)

    def encode(image, fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    def vm(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    grey = Image.linear_gradient("L").resize(SIZE)
    noise = Image.frombytes("L", SIZE, os.urandom(SIZE[0] * SIZE[1]))
    turned = Image.Exif()
    turned[0x0112] = 6
    grey16 = encode(grey.convert("I").point(lambda v: v * 257).convert("I;16"), "PNG")
    mask16 = encode(Image.merge("LA", (grey, grey)).convert("L").point(lambda v: v * 257), "PNG")
    cmyk = encode(Image.merge("CMYK", (grey, noise, grey, grey)), "JPEG", exif=turned.tobytes())
    palette = Image.merge("RGB", (grey, noise, grey)).convert("P")
    palette.info["transparency"] = 0
    palette = encode(palette, "PNG")
    webp = encode(Image.merge("RGBA", (grey, grey, grey, grey)), "WEBP", quality=50, method=0)
    rgba = encode(Image.merge("RGBA", (grey, noise, grey, grey)).resize((800, 500)), "PNG")
    grain = Image.effect_noise(SIZE, 8).point(lambda v: v // 4)
    photo = Image.merge("RGB", (grey, Image.radial_gradient("L").resize(SIZE), grain))
    # Limits that keep every pixel at quality 96, and that just miss at 84, so that the picture
    # must shrink by as little as fitting ever shrinks it: the most it holds.
    fits = len(encode(photo, "JPEG", quality=96, subsampling=0)) + 1000
    misses = len(encode(photo, "JPEG", quality=84, subsampling=0)) - 1
    photo = encode(photo, "PNG")
    cases = {
        "normalize 16-bit grey PNG": (image_costs.normalize_cost, images.normalize, (grey16,)),
        "normalize turned CMYK JPEG": (image_costs.normalize_cost, images.normalize, (cmyk,)),
        "normalize palette PNG with transparency": (image_costs.normalize_cost, images.normalize, (palette,)),
        "inspect RGBA WebP": (image_costs.inspect_cost, images.inspect, (webp,)),
        "black-and-white mask from 16-bit grey": (image_costs.bw_mask_cost, masks.to_bw_mask, (grey16, SIZE)),
        "alpha mask from a palette PNG": (image_costs.alpha_mask_cost, masks.to_alpha_mask, (palette, SIZE)),
        "fit an RGBA result": (image_costs.fit_cost, images.fit_under, (rgba, len(rgba) // 4)),
        "fit an RGB result as a JPEG": (image_costs.fit_cost, images.fit_under, (photo, fits)),
        "fit an RGB result that must shrink": (image_costs.fit_cost, images.fit_under, (photo, misses)),
    }
    del grey, noise, grain
    for name, (estimate, work, args) in cases.items():
        cost = estimate(*args)
        gc.collect()
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        before = vm("VmRSS")
        work(*args)
        print(json.dumps({"case": name, "held": vm("VmHWM") - before, "estimate": cost}))
    """
)


def test_each_estimate_covers_what_the_work_really_holds() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 9
    for row in rows:
        held, estimate = row["held"], row["estimate"]
        assert held <= estimate, f"{row['case']}: held {held / 1e6:.0f} MB, estimated {estimate / 1e6:.0f} MB"
        assert estimate <= 2.5 * held + 10_000_000, f"{row['case']}: estimate {estimate / 1e6:.0f} MB is idle"
