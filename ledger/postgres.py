"""PostgreSQL backend (psycopg 3): a ledger shared by many machines.

    >>> from ledger import open_ledger                                  # doctest: +SKIP
    >>> log = open_ledger("postgresql://postgres@127.0.0.1:54329/postgres?schema=team_a")  # doctest: +SKIP

``schema=NAME`` in the URL's query selects (and creates) a schema, so one database can hold
several ledgers. Serialization: every append runs ``LOCK TABLE ledger_entries IN SHARE ROW
EXCLUSIVE MODE`` (self-conflicting, readers unaffected) inside its transaction before it
reads the tail, so concurrent writers on any number of machines queue and never fork the
chain. Durability: ``synchronous_commit = on``; an append returns after COMMIT, i.e. after
the server flushed its WAL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from ledger.errors import LedgerInputError
from ledger.log import Ledger

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresLedger(Ledger):
    placeholder = "%s"

    def __init__(self, url: str, *, create: bool = True, origin: str | None = None) -> None:
        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        schema = next((v for k, v in query if k == "schema"), "public")
        if not _SCHEMA.match(schema):
            raise LedgerInputError(
                f"{_redact(url)}: schema name {schema!r} is not a plain identifier"
            )
        conninfo = urlunsplit(
            parts._replace(query=urlencode([(k, v) for k, v in query if k != "schema"]))
        )
        self.url = _redact(url)
        self.schema = schema
        try:
            self._db = psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as error:
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise LedgerInputError(f"{self.url}: cannot connect: {first}") from None
        self._db.execute("SET synchronous_commit = on")
        if create:
            with self._transaction("BEGIN") as cur:
                # Concurrent first openers would race on CREATE ... IF NOT EXISTS.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ledger:{schema}",))
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                cur.execute(f'SET LOCAL search_path TO "{schema}"')
                self._init_schema(cur, origin, "BIGINT", "BYTEA")
        self._db.execute(f'SET search_path TO "{schema}"')
        row = self._db.execute("SELECT to_regclass('ledger_entries')").fetchone()
        if row is None or row[0] is None:
            self._db.close()
            raise LedgerInputError(f"{self.url}: no ledger here (run `ledger init`)")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self, begin: str, lock: bool = False) -> Iterator[Any]:
        with self._db.cursor() as cur:
            cur.execute(begin)
            try:
                if lock:
                    cur.execute("LOCK TABLE ledger_entries IN SHARE ROW EXCLUSIVE MODE")
                yield cur
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")

    def _write(self) -> Any:
        return self._transaction("BEGIN", lock=True)

    def _read(self) -> Any:
        return self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
