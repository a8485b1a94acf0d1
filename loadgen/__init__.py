"""dyno's load generator: load on any OpenAI-compatible server, measured as vLLM's benchmark
measures it. Talks HTTP only. Other packages use only the names below.

    from loadgen import BenchConfig, LoadPoint, run_bench
    result = run_bench(BenchConfig(base_url="http://127.0.0.1:8000",
                                   points=(LoadPoint(concurrency=8),), num_prompts=200),
                       on_event=print)
    result.summary["median_ttft_ms"], result.points[0].records
"""

from loadgen.arrivals import LoadPoint
from loadgen.bench import Bench, BenchConfig, BenchResult, PointResult, arun_bench, run_bench
from loadgen.capacity import CapacityAnswer, CapacitySearch, find_capacity
from loadgen.cli import add_workload_arguments, dataset_config, parse_slo, positive_rate
from loadgen.datasets import DatasetConfig
from loadgen.events import Event, FirstToken, PointDone, PointStarted, RequestDone, RequestSent
from loadgen.metrics import SLO, summarize
from loadgen.mock_process import MockServer
from loadgen.mock_server import MockPacing
from loadgen.schema import (REQUESTS_FILE, SCHEMA_VERSION, SERVER_METRICS_FILE, SUMMARY_FILE, RecordWriter,
                            RequestRecord, read_records, read_summary, write_json)
from loadgen.sweep import run_sweep

__all__ = [
    "REQUESTS_FILE",
    "SERVER_METRICS_FILE",
    "SUMMARY_FILE",
    "RecordWriter",
    "write_json",
    "add_workload_arguments",
    "dataset_config",
    "parse_slo",
    "positive_rate",
    "Bench",
    "BenchConfig",
    "BenchResult",
    "CapacityAnswer",
    "CapacitySearch",
    "DatasetConfig",
    "Event",
    "FirstToken",
    "LoadPoint",
    "MockPacing",
    "MockServer",
    "PointDone",
    "PointResult",
    "PointStarted",
    "RequestDone",
    "RequestRecord",
    "RequestSent",
    "SCHEMA_VERSION",
    "SLO",
    "arun_bench",
    "find_capacity",
    "read_records",
    "read_summary",
    "run_bench",
    "run_sweep",
    "summarize",
]
