"""Screenshot the playground as a person sees it: `glyffuser demo` on data/model in headless Chromium.

    python docs/demo_screenshot.py      # writes docs/demo.png

Starts `glyffuser demo` on a free port of 127.0.0.1, opens the page in headless Chromium driven over
the DevTools protocol (the page generates its first prompt on load, in real time, which
`--screenshot`'s virtual clock does not wait for), screenshots it once the glyphs, readings and map
are in, and stops the server and the browser.
Needs Debian's `chromium` (and `fonts-noto-cjk` for the characters in the readings).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow_screenshot import find_chromium, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
READY = "document.body.innerText.includes('done:') && document.querySelectorAll('img').length > 4"


async def shoot(ws_url: str, url: str, out: Path, seconds: float = 120) -> None:
    """The Chrome DevTools Protocol over aiohttp's websocket (installed with DVC): load, wait in real time, capture."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        ids = iter(range(1, 10_000))

        async def call(method: str, **params):
            i = next(ids)
            await ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
            while True:
                msg = json.loads((await ws.receive()).data)
                if msg.get("id") == i:
                    return msg.get("result", {})

        await call("Page.enable")
        await call("Emulation.setDeviceMetricsOverride", width=1280, height=1450, deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=url)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # the page generates on load: wait for its glyphs, readings and map
            result = await call("Runtime.evaluate", expression=READY, returnByValue=True)
            if result.get("result", {}).get("value"):
                break
            await asyncio.sleep(0.5)
        else:
            sys.exit(f"the page did not finish generating within {seconds:.0f} s")
        await asyncio.sleep(1.5)  # let the last images decode and paint
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    chromium = find_chromium()
    port, debug = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "glyffuser.cli", "demo", "--port", str(port)], cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(url, seconds=120)
        with tempfile.TemporaryDirectory() as profile:
            browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                        f"--user-data-dir={profile}", f"--remote-debugging-port={debug}",
                                        "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for(f"http://127.0.0.1:{debug}/json/version", seconds=30)
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{debug}/json"))
                ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
                out = ROOT / "docs" / "demo.png"
                asyncio.run(shoot(ws_url, url, out))
                print(f"{url} -> {out}")
            finally:
                browser.terminate()
                browser.wait(timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
