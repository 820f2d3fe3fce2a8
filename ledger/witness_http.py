"""The witness over HTTP (stdlib ``http.server``, loopback), and the log's side of the protocol.

    server = serve(Witness.load(Path("state")), "127.0.0.1", 0)   # serve_forever() in a thread
    line = collect_cosignature(log, note, http_transport(f"http://127.0.0.1:{port}"))

Endpoints (https://c2sp.org/tlog-witness): ``POST /add-checkpoint`` and
``GET /<origin hash>/checkpoint``. The log side submits a checkpoint with the size it last
had cosigned by that witness (0 at first); on ``409 Conflict`` it learns the witness's size,
proves consistency from there, and submits once more.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from ledger.errors import LedgerInputError
from ledger.note import Checkpoint, is_decimal, split_note
from ledger.witness import (
    MAX_REQUEST_BYTES,
    WitnessBadRequest,
    WitnessError,
    WitnessRefusal,
    add_checkpoint_request,
    origin_hash,
)

if TYPE_CHECKING:
    from ledger.log import Ledger
    from ledger.witness import Witness

Transport = Callable[[bytes], str]  # an add-checkpoint request body -> cosignature line(s)
_TIMEOUT_S = 30


def serve(witness: Witness, host: str, port: int) -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server for ``witness``; loopback addresses only."""
    if not ipaddress.ip_address(host).is_loopback:
        raise LedgerInputError(f"the witness listens on loopback only, not {host}")
    by_hash = {origin_hash(o): o for o in witness.logs}

    class Handler(BaseHTTPRequestHandler):
        server_version = "modelguard-witness"

        def _reply(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if self.path != "/add-checkpoint":
                self._reply(404, "not found\n")
                return
            length = self.headers.get("Content-Length", "")
            if not length.isdigit() or int(length) > MAX_REQUEST_BYTES:
                self._reply(400, "missing or too large Content-Length\n")
                return
            body = self.rfile.read(int(length))
            try:
                line = witness.add_checkpoint(body)
            except WitnessError as error:
                if error.status == 409:
                    self._reply(409, error.body, "text/x.tlog.size")
                else:
                    self._reply(error.status, f"{error}\n")
                return
            self._reply(200, line)

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            origin = by_hash.get(parts[0]) if len(parts) == 2 else None
            note = witness.latest(origin) if origin and parts[1] == "checkpoint" else None
            if note is None:
                self._reply(404, "not found\n")
            else:
                self._reply(200, note)

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet: the CLI reports what matters

    return ThreadingHTTPServer((host, port), Handler)


def http_transport(url: str) -> Transport:
    """Submit requests to the witness at ``url`` (its submission prefix)."""
    if not url.startswith(("http://", "https://")):
        raise LedgerInputError(f"witness URL {url!r} must start with http:// or https://")
    endpoint = url.rstrip("/") + "/add-checkpoint"

    def submit(body: bytes) -> str:
        request = urllib.request.Request(endpoint, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                return str(response.read(MAX_REQUEST_BYTES).decode("utf-8"))
        except urllib.error.HTTPError as error:
            text = error.read(MAX_REQUEST_BYTES).decode("utf-8", "replace")
            if error.code in (403, 409, 422):
                raise WitnessRefusal(f"witness {url}: {text.strip()}", error.code, text) from None
            raise WitnessBadRequest(f"witness {url}: HTTP {error.code} {text.strip()}") from None
        except (urllib.error.URLError, OSError) as error:
            raise LedgerInputError(f"witness {url}: cannot reach it: {error}") from None

    return submit


def _cosignature_lines(note: str, reply: str) -> str:
    """``reply`` if it is one or more well-formed cosignature/v1 lines and nothing else.

    The log keeps ``note + reply`` among its checkpoints, so a witness (or anything answering
    at its URL) must not be able to append other text: a blank line or a malformed line would
    make the stored note unreadable. Whether a line verifies is each verifier's check, under
    the witness keys it trusts.
    """
    text, signatures = split_note(note)
    try:
        extended_text, extended = split_note(note + reply)
    except LedgerInputError as error:
        raise WitnessBadRequest(f"the witness's reply is not cosignature lines: {error}") from None
    added = extended[len(signatures) :]
    if extended_text != text or not added or not reply.endswith("\n"):
        raise WitnessBadRequest("the witness's reply is not cosignature lines")
    if any(len(blob) != 8 + 64 for _, _, blob in added):
        raise WitnessBadRequest("the witness's reply holds a line that is not a cosignature/v1")
    return reply


def collect_cosignature(log: Ledger, note: str, submit: Transport, known_size: int = 0) -> str:
    """Have one witness cosign ``note`` (signed by ``log``); return its cosignature line(s).

    ``known_size``: the size this witness last cosigned, if the caller knows it. A witness that
    already cosigned a larger tree, or a different history, refuses (WitnessRefusal).
    """
    checkpoint = Checkpoint.from_text(split_note(note)[0])
    old = known_size
    for attempt in range(2):
        if old > checkpoint.size:
            raise WitnessRefusal(
                f"the witness already cosigned size {old}, beyond this checkpoint's"
                f" {checkpoint.size}",
                409,
                f"{old}\n",
            )
        proof = log.consistency_proof(old, checkpoint.size).hashes if old else ()
        try:
            return _cosignature_lines(note, submit(add_checkpoint_request(old, proof, note)))
        except WitnessRefusal as error:
            if error.status != 409 or attempt or not is_decimal(error.body.strip()):
                raise
            old = int(error.body.strip())
    raise AssertionError("unreachable")  # pragma: no cover


def record_cosigned(log: Ledger, note: str) -> None:
    """Keep a cosigned checkpoint among the log's checkpoints (``Ledger.checkpoints``)."""
    from ledger.entry import utc_timestamp

    checkpoint = Checkpoint.from_text(split_note(note)[0])
    with log._write() as cur:
        cur.execute(
            log._sql("INSERT INTO ledger_checkpoints (tree_size, note, created) VALUES (?, ?, ?)"),
            (checkpoint.size, note, utc_timestamp()),
        )
