"""Hibernatable connections: the rows that let a connection outlive its actor's generation.

In engine mode the engine's gateway keeps a client's WebSocket open while the actor sleeps, and
while it moves to another runtime process after a crash. Each such connection has a row in
``_rivet_conns`` (who it is: params, the tunnelled request it arrived on) and one in
``_rivet_conn_state`` (its state, subscriptions and message indexes), the official runtime's
tables and encodings (spec engine-envoy §10.1: parameters, headers, state and subscriptions as
CBOR). The actor writes them when the connection opens, with the state commit of every action or
subscription change on it that changed its state or subscriptions, and all of them before it
sleeps. When the actor starts again, the start command lists the sockets the gateway still
holds; those connections are restored from the rows (no connect hooks run again), the others are
stale and deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import apsw

from .._protocol.cbor import cbor_dumps_compat, cbor_loads
from .conn import Conn, Hibernation

__all__ = ["PersistedConn", "conn_snapshot", "delete_conns", "load_conns", "persist_conns"]

_UPSERT_CONN = (
    "INSERT INTO _rivet_conns (conn_id, parameters, gateway_id, request_id, request_path, "
    "request_headers) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (conn_id) DO UPDATE SET "
    "parameters = excluded.parameters, gateway_id = excluded.gateway_id, "
    "request_id = excluded.request_id, request_path = excluded.request_path, "
    "request_headers = excluded.request_headers"
)
_UPSERT_STATE = (
    "INSERT INTO _rivet_conn_state (conn_id, state, server_message_index, client_message_index, "
    "subscriptions) VALUES (?, ?, ?, ?, ?) ON CONFLICT (conn_id) DO UPDATE SET "
    "state = excluded.state, server_message_index = excluded.server_message_index, "
    "client_message_index = excluded.client_message_index, subscriptions = excluded.subscriptions"
)
_LOAD = (
    "SELECT c.conn_id, c.parameters, s.state, s.subscriptions, c.gateway_id, c.request_id, "
    "s.server_message_index, s.client_message_index, c.request_path, c.request_headers "
    "FROM _rivet_conns c JOIN _rivet_conn_state s ON s.conn_id = c.conn_id ORDER BY c.conn_id"
)


@dataclass(slots=True)
class PersistedConn:
    """One connection as stored at the actor's last sleep."""

    conn_id: str
    params: Any
    state: Any
    subscriptions: list[str]
    hibernation: Hibernation


def _state_bytes(state: Any) -> bytes:
    return b"" if state is None else cbor_dumps_compat(state)


def conn_snapshot(c: Conn) -> tuple[bytes, bytes]:
    """``(state, subscriptions)`` of ``c`` as its row stores them (what tells that it changed)."""
    return _state_bytes(c.state), cbor_dumps_compat(sorted(c.subscriptions))


def persist_conns(
    conn: apsw.Connection,
    conns: Iterable[Conn],
    snapshots: Iterable[tuple[bytes, bytes]] | None = None,
) -> None:
    """Write (insert or update) the rows of ``conns``; the caller owns the transaction.

    ``snapshots``: each connection's :func:`conn_snapshot`, when the caller took them already.
    A connection whose ``_rivet_conns`` row was written before (``c.stored`` set) gets only its
    ``_rivet_conn_state`` row: who it is does not change. Sets ``c.stored``.
    """
    conns = list(conns)
    taken = [conn_snapshot(c) for c in conns] if snapshots is None else list(snapshots)
    for c, (state, subscriptions) in zip(conns, taken, strict=True):
        h = c.hibernation
        if h is None:
            raise ValueError(f"connection {c.id} is not hibernatable")
        if c.stored is None:
            conn.execute(
                _UPSERT_CONN,
                (
                    c.id,
                    cbor_dumps_compat(c.params),
                    h.gateway_id,
                    h.request_id,
                    h.request_path,
                    cbor_dumps_compat(h.request_headers),
                ),
            )
        conn.execute(
            _UPSERT_STATE,
            (c.id, state, h.server_message_index, h.client_message_index, subscriptions),
        )
    for c, snapshot in zip(conns, taken, strict=True):
        c.stored = snapshot


def load_conns(conn: apsw.Connection) -> list[PersistedConn]:
    """Every stored connection (a row that does not decode is skipped and reported)."""
    out: list[PersistedConn] = []
    for row in conn.execute(_LOAD):
        (conn_id, params, state, subs, gateway_id, request_id, server_index, client_index,
         path, headers) = row
        decoded_headers = cbor_loads(headers) if headers else {}
        subscriptions = cbor_loads(subs) if subs else []
        out.append(
            PersistedConn(
                conn_id=conn_id,
                params=cbor_loads(params) if params else None,
                state=cbor_loads(state) if state else None,
                subscriptions=[str(name) for name in subscriptions or ()],
                hibernation=Hibernation(
                    gateway_id=bytes(gateway_id),
                    request_id=bytes(request_id),
                    request_path=path,
                    request_headers={str(k): str(v) for k, v in (decoded_headers or {}).items()},
                    server_message_index=int(server_index),
                    client_message_index=int(client_index),
                ),
            )
        )
    return out


def delete_conns(conn: apsw.Connection, conn_ids: Iterable[str]) -> None:
    """Remove connections' rows; the caller owns the transaction."""
    for conn_id in conn_ids:
        conn.execute("DELETE FROM _rivet_conn_state WHERE conn_id = ?", (conn_id,))
        conn.execute("DELETE FROM _rivet_conns WHERE conn_id = ?", (conn_id,))
