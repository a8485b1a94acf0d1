"""`dyno serve` keeps its start-up objects out of later garbage collections (gc.freeze, as
vLLM's server does): a full collection would otherwise walk them all on the engine's thread."""

from __future__ import annotations

import gc

from engine.server import serve


def test_objects_alive_at_start_up_leave_the_collections():
    alive = [{"built": "at start-up"}]
    try:
        serve._freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        walked = [o for g in range(3) for o in gc.get_objects(generation=g)]
        assert not any(o is alive for o in walked)
    finally:
        gc.unfreeze()
    assert any(o is alive for o in gc.get_objects())
