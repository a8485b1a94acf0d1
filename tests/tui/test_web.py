"""`dyno tui --web` in headless Chromium: textual-serve's page loads, the app starts and its
screen reaches the browser (the page's first-byte mark, the terminal output on the websocket),
and a key typed in the browser switches the screen. Chromium is driven over its DevTools
protocol with aiohttp (already there: textual-serve is built on it)."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import subprocess
import sys
import time

import aiohttp
import httpx
import pytest

from tests.reports.test_browser import chromium  # noqa: F401  (the fixture: find or install it)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def web_app(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dyno", "tui", "--web", "--port", str(port),
                             "--results-dir", str(tmp_path), "--no-record"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


class DevTools:
    """Just enough of the DevTools protocol: calls, and the websocket frames the page gets."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.next_id, self.frames = ws, 0, bytearray()

    async def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send_json({"id": my_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("method") == "Network.webSocketFrameReceived":
                self._frame(msg["params"]["response"])
            if msg.get("id") == my_id:
                return msg.get("result", {})

    def _frame(self, response: dict) -> None:
        data = response.get("payloadData", "")
        self.frames += base64.b64decode(data) if response.get("opcode") == 2 else data.encode()

    async def wait_for(self, what: str, check, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.3)

    async def body_class(self) -> str:
        r = await self.call("Runtime.evaluate", expression="document.body ? document.body.className : ''",
                            returnByValue=True)
        return r.get("result", {}).get("value", "")


async def drive(chromium_bin: str, url: str, profile: str) -> None:
    proc = subprocess.Popen([chromium_bin, "--headless", "--no-sandbox", "--disable-gpu",
                             f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--window-size=1280,800", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        devtools_url = None
        for line in proc.stderr:
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                devtools_url = f"http://127.0.0.1:{m.group(1)}/json"
                break
        assert devtools_url, "chromium did not open its DevTools port"
        async with aiohttp.ClientSession() as http:
            targets = await (await http.get(devtools_url)).json()
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                dt = DevTools(ws)
                await dt.call("Network.enable")
                await dt.call("Page.navigate", url=url)
                await dt.wait_for("the app's first bytes", lambda: _has(dt, "-first-byte"))
                await dt.wait_for("the Servers screen", lambda: _sent(dt, b"Launch", b"Discover"))
                shot = await dt.call("Page.captureScreenshot", format="png")
                assert len(base64.b64decode(shot["data"])) > 10_000   # a drawn page, not a blank one
                await dt.call("Runtime.evaluate",   # xterm.js reads keys from its hidden textarea
                              expression="document.querySelector('.xterm-helper-textarea').focus()")
                await dt.call("Input.insertText", text="2")
                await dt.wait_for("the Monitor screen", lambda: _sent(dt, b"gen tok/s", b"TTFT p99"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _has(dt: DevTools, cls: str) -> bool:
    return cls in (await dt.body_class()).split()


async def _sent(dt: DevTools, *texts: bytes) -> bool:
    await dt.call("Runtime.evaluate", expression="1")   # pumps the frames received meanwhile
    return all(t in dt.frames for t in texts)


def test_web_renders_in_headless_chromium(web_app, chromium, tmp_path):  # noqa: F811
    asyncio.run(drive(chromium, web_app, str(tmp_path / "profile")))
