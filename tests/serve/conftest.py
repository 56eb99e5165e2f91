"""A tiny trained run (item head, co-occurrence fusion, history excluded) served by real uvicorn
servers on free localhost ports: one with micro-batching, one without (and a small body limit)."""

from __future__ import annotations

import pytest

from tests.cli.tiny_runs import ITEM_DECODER, train_tiny_run
from tests.one_thread import one_thread  # noqa: F401  (tiny models: one CPU thread)
from tests.pipeline.conftest import tiny_prepared  # noqa: F401  (fixture)

BODY_LIMIT = 4096  # bytes: the unbatched server's, so an oversized body is cheap to send
MAX_LIST = 50


@pytest.fixture(scope="package")
def served_run(tmp_path_factory, tiny_prepared):  # noqa: F811
    run, _ = train_tiny_run(tmp_path_factory.mktemp("serve"), tiny_prepared, ITEM_DECODER)
    return run


def _start(run, **options):
    from genrec.serve.app import create_app
    from genrec.serve.server import BackgroundServer
    from genrec.serve.service import RecommendService

    service = RecommendService.open(run, device="cpu", max_list=options.pop("max_list", 1000))
    return BackgroundServer(create_app(service, **options)).start()


@pytest.fixture(scope="package")
def batched_server(served_run):
    """Batches of up to 64 requests, each waiting up to 50 ms for more (so concurrent ones meet)."""
    server = _start(served_run, batching=True, max_batch=64, max_wait_ms=50.0)
    yield server
    server.stop()


@pytest.fixture(scope="package")
def plain_server(served_run):
    """One recommender call per request; bodies over BODY_LIMIT and lists over MAX_LIST refused."""
    server = _start(served_run, batching=False, max_body_bytes=BODY_LIMIT, max_list=MAX_LIST)
    yield server
    server.stop()
