"""Shared fixtures: a simulated endpoint per test (real HTTP on 127.0.0.1) and one Ray session per test run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sdg.endpoints.sim import SimServer

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture
def sim_factory() -> Iterator:
    """Start simulated endpoints with given options; all are stopped after the test."""
    servers: list[SimServer] = []

    def start(**options: object) -> SimServer:
        server = SimServer(**options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sim(sim_factory) -> SimServer:
    return sim_factory()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Ray takes ~5 s to start here: one local session shared by every test that needs it."""
    import ray

    from sdg.execution.ray_executor import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()
