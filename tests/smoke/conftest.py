"""pytest-celery's Docker setup, with jobtrack in the worker and a PostgreSQL container.

pytest-celery's own fixtures start the broker (Redis and RabbitMQ: each test runs with
each), the result backend and the worker, on a network of their own. Two things are
adapted: the worker
image is jobtrack's (``tests/smoke/worker.Dockerfile``, built from this checkout by
scripts/test-containers), the worker installs jobtrack as it starts (``smoke_signals``)
and runs ``smoke_tasks``, and a PostgreSQL container on the same network is the
tracking database; and this host reaches every container at the address
pytest-docker-tools gives (``get_addr``: the published port, or the container's own
address when the tests themselves run inside a container, as on this project's
machines), where pytest-celery's vendors would always use ``localhost`` and the port.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pytest_celery import CeleryWorkerContainer, RabbitMQContainer, RedisContainer
from pytest_celery.vendors.rabbitmq.defaults import RABBITMQ_CONTAINER_TIMEOUT
from pytest_celery.vendors.redis.defaults import REDIS_CONTAINER_TIMEOUT
from pytest_celery.vendors.worker.defaults import (
    DEFAULT_WORKER_CONTAINER_TIMEOUT,
    DEFAULT_WORKER_VOLUME,
)
from pytest_docker_tools import container, fxtr

from jobtrack.store import Store
from tests.smoke import smoke_signals, smoke_tasks

WORKER_IMAGE = "jobtrack-smoke-worker:local"


class JobtrackWorker(CeleryWorkerContainer):
    """pytest-celery's worker container, running jobtrack's image and modules."""

    @classmethod
    def version(cls) -> str:
        return "jobtrack"

    @classmethod
    def tasks_modules(cls) -> set[Any]:
        return {smoke_tasks}

    @classmethod
    def signals_modules(cls) -> set[Any]:
        return {smoke_signals}


class RedisHere(RedisContainer):
    @property
    def host_url(self) -> str:
        host, port = self.get_addr("6379/tcp")
        return f"{self.prefix()}{host}:{port}/{self.vhost}"


class RabbitMQHere(RabbitMQContainer):
    @property
    def host_url(self) -> str:
        host, port = self.get_addr("5672/tcp")
        return f"{self.prefix()}{host}:{port}/{self.vhost}"


default_redis_broker = container(
    image="{default_redis_broker_image}",
    ports=fxtr("default_redis_broker_ports"),
    environment=fxtr("default_redis_broker_env"),
    network="{default_pytest_celery_network.name}",
    wrapper_class=RedisHere,
    timeout=REDIS_CONTAINER_TIMEOUT,
    command=fxtr("default_redis_broker_command"),
)
default_redis_backend = container(
    image="{default_redis_backend_image}",
    ports=fxtr("default_redis_backend_ports"),
    environment=fxtr("default_redis_backend_env"),
    network="{default_pytest_celery_network.name}",
    wrapper_class=RedisHere,
    timeout=REDIS_CONTAINER_TIMEOUT,
    command=fxtr("default_redis_backend_command"),
)
default_rabbitmq_broker = container(
    image="{default_rabbitmq_broker_image}",
    ports=fxtr("default_rabbitmq_broker_ports"),
    environment=fxtr("default_rabbitmq_broker_env"),
    network="{default_pytest_celery_network.name}",
    wrapper_class=RabbitMQHere,
    timeout=RABBITMQ_CONTAINER_TIMEOUT,
)


@pytest.fixture
def default_worker_container_cls() -> type[CeleryWorkerContainer]:
    return JobtrackWorker


@pytest.fixture(scope="session")
def default_worker_container_session_cls() -> type[CeleryWorkerContainer]:
    return JobtrackWorker


@pytest.fixture
def default_worker_signals() -> set[Any]:
    return {smoke_signals}


smoke_postgres = container(
    image="postgres:16",
    environment={
        "POSTGRES_USER": "jobtrack",
        "POSTGRES_PASSWORD": "jobtrack",
        "POSTGRES_DB": "jobtrack",
    },
    network="{default_pytest_celery_network.name}",
    ports={"5432/tcp": None},
    timeout=120,
)


@pytest.fixture
def default_worker_env(
    default_worker_container_cls: type[CeleryWorkerContainer],
    celery_worker_cluster_config: dict[str, Any],
    smoke_postgres: Any,
) -> dict[str, Any]:
    env = dict(default_worker_container_cls.initial_env(celery_worker_cluster_config))
    # On pytest-celery's network a container answers to its short id.
    env.update(
        JOBTRACK_DATABASE_URL=f"postgresql://jobtrack:jobtrack@{smoke_postgres.id[:12]}:5432/jobtrack",
        JOBTRACK_HEARTBEAT_INTERVAL_S="0.5",
        JOBTRACK_FLUSH_INTERVAL_S="0.1",
        JOBTRACK_CONNECT_TIMEOUT_S="2",
    )
    return env


default_worker_container = container(
    image=WORKER_IMAGE,
    ports=fxtr("default_worker_ports"),
    environment=fxtr("default_worker_env"),
    network="{default_pytest_celery_network.name}",
    volumes={"{default_worker_volume.name}": DEFAULT_WORKER_VOLUME},
    wrapper_class=JobtrackWorker,
    timeout=DEFAULT_WORKER_CONTAINER_TIMEOUT,
    command=fxtr("default_worker_command"),
)


@pytest.fixture
def tracking_db(smoke_postgres: Any) -> Iterator[Store]:
    """The PostgreSQL container's jobtrack database, from this host."""
    host, port = smoke_postgres.get_addr("5432/tcp")
    url = f"postgresql://jobtrack:jobtrack@{host}:{port}/jobtrack"
    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    store = Store(url)
    yield store
    store.close()
