"""Scrapes the server's Prometheus /metrics while a point runs, into a time series that sits
next to the client's records (same epoch clock)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

# The process's own housekeeping says nothing about serving.
SKIP_PREFIXES = ("python_", "process_")


@dataclass(slots=True)
class MetricSample:
    time: float
    point: str
    values: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"time": self.time, "point": self.point, "values": self.values})


def parse_metrics(text: str) -> dict[str, float]:
    """Counters and gauges as {'name{label="v"}': value}; histogram buckets left out."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith(SKIP_PREFIXES) or family.type not in ("counter", "gauge", "histogram"):
            continue
        for s in family.samples:
            if s.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def scrape_loop(url: str, api_key: str | None, point: str, interval_s: float,
                      now: Callable[[], float], path: Path | None, samples: list[MetricSample]) -> None:
    """Until cancelled: one sample per interval, appended to `path` as it comes. Its own
    client, so a scrape never waits for (or takes) one of the load's connections."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(headers=headers, timeout=max(interval_s, 1.0)) as client:
        await _scrape(client, url, point, interval_s, now, path, samples)


async def _scrape(client: httpx.AsyncClient, url: str, point: str, interval_s: float,
                  now: Callable[[], float], path: Path | None, samples: list[MetricSample]) -> None:
    while True:
        try:
            resp = await client.get(url)
            if resp.status_code == 200:
                sample = MetricSample(now(), point, parse_metrics(resp.text))
                samples.append(sample)
                if path is not None:
                    with open(path, "a", encoding="utf-8") as f:
                        f.write(sample.to_json() + "\n")
        except (httpx.HTTPError, ValueError) as e:  # a scrape failing never stops the run
            log.debug("scrape of %s failed: %s", url, e)
        await asyncio.sleep(interval_s)
