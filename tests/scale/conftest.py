"""Fixtures of the scale tests: two real `jupyter server` processes sharing one real `redis-server`.

`cluster` is a fresh Redis and two fresh servers for a test that stops, kills or restarts
something; `shared_cluster` is one for a whole module of tests that leave them running
(each test uses sessions of its own). Both check at the end that neither server logged a
traceback. `redis_server` is the one Redis fixture of the test suite (`tests/redis_helpers.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_helpers import RedisServer, redis_server  # noqa: F401  (a fixture, found by name)
from scale_helpers import Cluster


def _run(redis: RedisServer, base: Path) -> Iterator[Cluster]:
    cluster = Cluster.start(redis, base)
    try:
        yield cluster
    finally:
        cluster.stop()
    assert not cluster.tracebacks(), f"a server logged a traceback: {cluster.tracebacks()}"


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:  # noqa: F811  (the fixture)
    """Servers A and B on a fresh Redis, for one test."""
    yield from _run(redis_server, tmp_path)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Servers A and B on one Redis, for every test of a module that leaves them running."""
    with RedisServer() as redis:
        yield from _run(redis, tmp_path_factory.mktemp("cluster"))
