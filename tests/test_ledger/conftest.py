"""Ledger backends for the tests: SQLite always; PostgreSQL from MODELGUARD_TEST_POSTGRES_URL.

Without that variable the PostgreSQL tests skip and say how to run them; with
MODELGUARD_REQUIRE_POSTGRES=1 (set by .ci/run) a missing server fails them instead.
Each PostgreSQL test gets a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

HOW_TO = (
    'PostgreSQL ledger tests need a server: run `eval "$(bash .ci/postgres.sh)"` (exports'
    " MODELGUARD_TEST_POSTGRES_URL), or run .ci/run"
)


def postgres_base_url() -> str:
    url = os.environ.get("MODELGUARD_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("MODELGUARD_REQUIRE_POSTGRES") == "1":
            pytest.fail("MODELGUARD_REQUIRE_POSTGRES=1 but MODELGUARD_TEST_POSTGRES_URL is unset")
        pytest.skip(HOW_TO)
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    import psycopg

    base = postgres_base_url()
    schema = f"t_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(base, autocommit=True)
    except psycopg.OperationalError as error:
        if os.environ.get("MODELGUARD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"cannot reach PostgreSQL at {base}: {error}")
        pytest.skip(f"cannot reach PostgreSQL at {base}: {error}. {HOW_TO}")
    try:
        yield f"{base}?schema={schema}"
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))
