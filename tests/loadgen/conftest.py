"""Shared fixtures: mock servers (real processes) started once per pacing and reused."""

from __future__ import annotations

import pytest

from loadgen import BenchConfig, DatasetConfig, LoadPoint, MockPacing, MockServer


@pytest.fixture(scope="session")
def mock_factory():
    servers: dict[MockPacing, MockServer] = {}

    def get(**pacing) -> MockServer:
        key = MockPacing(**pacing)
        if key not in servers:
            servers[key] = MockServer(key).start()
        return servers[key]

    yield get
    for server in servers.values():
        server.stop()


def make_config(mock: MockServer, point: LoadPoint, num_prompts: int | None = 20, **kw) -> BenchConfig:
    """A small run against a mock: short prompts, scraping off unless asked for."""
    dataset = kw.pop("dataset", DatasetConfig(input_len="20", output_len="10"))
    kw.setdefault("scrape_interval_s", None)
    return BenchConfig(base_url=mock.base_url, points=(point,), num_prompts=num_prompts, dataset=dataset, **kw)
