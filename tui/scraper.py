"""Scraping /metrics of every live server about once a second, without blocking the UI: an
async loop on the app's event loop (httpx.AsyncClient). Each scrape becomes a "metrics"
record (raw values and histogram buckets, so a replay can derive everything again); a
/metrics that stops answering turns the server "unreachable" and logs "scrape_failed"."""

from __future__ import annotations

import asyncio
import time

import httpx

from loadgen.scrape import parse_metrics
from tui.promhist import parse_histograms
from tui.session import ServerHandle, Session

INTERVAL_S = 1.0
TIMEOUT_S = 2.0
SCRAPED_STATES = ("ready", "unreachable")


async def scrape_forever(session: Session, interval_s: float = INTERVAL_S) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        while not session.is_closed:
            servers = [s for s in session.servers if s.state in SCRAPED_STATES]
            await asyncio.gather(*(scrape_one(session, client, s) for s in servers))
            await asyncio.sleep(interval_s)


async def scrape_one(session: Session, client: httpx.AsyncClient, handle: ServerHandle) -> bool:
    headers = {"Authorization": f"Bearer {handle.api_key}"} if handle.api_key else {}
    try:
        resp = await client.get(handle.base_url + "/metrics", headers=headers)
        resp.raise_for_status()
        values, hists = parse_metrics(resp.text), parse_histograms(resp.text)
    except (httpx.HTTPError, ValueError) as e:
        _failed(session, handle, _reason(e))
        return False
    if handle.state == "unreachable":
        session.set_state(handle, "ready", f"{handle.name}: /metrics answers again")
    session.record("metrics", {"server_id": handle.id, "values": values, "hists": hists},
                   t=time.time())
    return True


def _reason(e: Exception) -> str:
    if isinstance(e, httpx.HTTPStatusError):
        return f"HTTP {e.response.status_code}"
    if isinstance(e, httpx.TimeoutException):
        return f"no answer within {TIMEOUT_S:g}s"
    if isinstance(e, httpx.ConnectError):
        return "connection refused"
    return type(e).__name__


def _failed(session: Session, handle: ServerHandle, reason: str) -> None:
    if handle.state == "unreachable":
        return
    # A launched server whose process died is the supervisor's to report (failed).
    if handle.launched and handle.proc is not None and handle.proc.poll() is not None:
        return
    session.events.add("scrape_failed", f"{handle.name}: /metrics {reason}", handle.id)
    session.set_state(handle, "unreachable", f"{handle.name} unreachable ({reason})")
