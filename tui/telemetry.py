"""Everything the Monitor draws, fed by the session's records: "metrics" scrapes become server
series (tui/series.py), "request" records the client log (tui/client_series.py); each scrape
also gets the client's stats at the same instant (one time axis: the gap between client and
server TTFT, the generator's scheduling lag) and updates the SLO verdicts. Live and replayed
sessions go through this same path."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tui.client_series import ClientLog
from tui.series import WINDOW_S, MetricsStore

if TYPE_CHECKING:
    from tui.session import Session


class Telemetry:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.store = MetricsStore()
        self.client = ClientLog()
        session.subscribe(self.ingest)

    def ingest(self, kind: str, payload: dict) -> None:
        if kind == "request":
            self.client.add(payload)
        elif kind == "metrics":
            self._metrics(payload)

    def _metrics(self, payload: dict) -> None:
        server_id, t = payload["server_id"], payload["t"]
        point = self.store.add(server_id, t, payload.get("values", {}), payload.get("hists", {}))
        point.update(self.client.stats(t, WINDOW_S, server_id))
        if point.get("client_ttft_p50") is not None and point.get("ttft_p50") is not None:
            point["ttft_gap_ms"] = point["client_ttft_p50"] - point["ttft_p50"]
        self._check_slos(server_id, t, point)

    def _check_slos(self, server_id: str, t: float, point: dict) -> None:
        """The server's windowed percentile, or the client's where the server has none
        (servers without latency histograms)."""
        values = {}
        for slo in self.session.slos.slos:
            server = point.get(slo.key)
            values[slo.key] = server if server is not None else point.get(f"client_{slo.key}")
        for kind, text in self.session.slos.update(server_id, values, t):
            if not self.session.is_replay:  # a replay has the recorded events already
                self.session.events.add(kind, text, server_id, at=t)

    def reset(self) -> None:
        self.store.clear()
        self.client.clear()
