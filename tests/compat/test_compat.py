"""Scenarios 1-27, 29 of client-protocol.md §15 (not 28, the inspector), each in json, cbor and
bare.

The checks themselves live in ``scenarios.mjs``, ``scenarios_conn.mjs``, ``scenarios_queue.mjs``
(queues: ``handle.send`` / ``conn.send`` with and without ``wait``, ``can_publish``, the
``queue.*`` errors and the wire shape of each send) and ``restart.mjs`` (scenario 20), and run in
Node with the official ``createClient`` from ``rivetkit/client`` (``conftest.py`` starts the
servers and the Node processes). Each test here stands for one scenario in one encoding: it passes
when every check of that scenario passed, and otherwise prints, per failed check, the error the
client raised, the HTTP exchanges (request as the client sent it, response as our server
answered) and, for WebSocket scenarios, the recorded sockets (offered and selected subprotocols,
every frame raw and decoded, close code and reason). Scenario 30 (a browser) is
``tests/browser``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import CompatResults

ENCODINGS = ("json", "cbor", "bare")

SCENARIOS = {
    1: "bootstrap_metadata_prefix_url_auth",
    2: "get_or_create_query_form_keys",
    3: "get_or_create_input",
    4: "create_and_get_for_id",
    5: "resolve_via_actors_api",
    6: "not_found",
    7: "token",
    8: "gateway_url",
    9: "value_round_trips",
    10: "conn_params",
    11: "errors",
    12: "body_robustness",
    13: "connect_init_ready",
    14: "events_subscriptions",
    15: "ws_actions_typed_ids_concurrency",
    16: "ws_action_errors",
    17: "connection_rejected",
    18: "connect_missing_actor",
    19: "server_disconnect_reconnect",
    20: "server_restart_reconnect",
    21: "dispose_on_disconnect",
    22: "oversized_frame",
    23: "get_params_per_connect",
    24: "raw_request",
    25: "raw_websocket",
    26: "skip_ready_wait",
    27: "queues",
    29: "actor_router_routes",
}


def _format_check(line: dict[str, Any]) -> str:
    out = [f"✗ {line['check']} ({line.get('ms', '?')} ms)"]
    error = line.get("error") or {}
    out.append(f"  error: {error.get('name', '')}: {error.get('message', '')}")
    for key in ("group", "code", "metadata", "actor"):
        if key in error:
            out.append(f"  error.{key}: {json.dumps(error[key])}")
    if line.get("notes"):
        out.append(f"  notes: {json.dumps(line['notes'])}")
    for ex in line.get("exchanges") or []:
        out.append("  " + json.dumps(ex, ensure_ascii=False))
    return "\n".join(out)


def _failure_report(results: CompatResults, encoding: str, scenario: int) -> str | None:
    """``None`` when the scenario fully passed, else a readable explanation."""
    run = results.runs.get(encoding)
    if run is None:
        return f"no Node run for encoding {encoding} (selection bookkeeping failed)"
    events = run.events(scenario)
    start = next((e for e in events if e["type"] == "scenario_start"), None)
    end = next((e for e in events if e["type"] == "scenario_end"), None)
    checks = {e["check"]: e for e in events if e["type"] == "check"}
    problems: list[str] = []
    if start is None:
        problems.append("the scenario never started")
    else:
        if not start["checks"]:
            problems.append("the scenario has no checks")
        missing = [name for name in start["checks"] if name not in checks]
        if missing:
            problems.append(f"checks that never reported: {', '.join(missing)}")
    if end is None and start is not None:
        problems.append("the scenario did not finish")
    failed = [line for line in checks.values() if not line.get("ok")]
    if not problems and not failed:
        return None
    parts = [f"scenario {scenario} ({SCENARIOS[scenario]}) in {encoding}:"]
    passed = [name for name, line in checks.items() if line.get("ok")]
    if passed:
        parts.append(f"passed: {', '.join(passed)}")
    parts.extend(problems)
    parts.extend(_format_check(line) for line in failed)
    if scenario == 1 and results.prefixed.error:
        parts.append(f"prefixed server (/api/rivet) did not start:\n{results.prefixed.error}")
    if problems or run.returncode not in (0, 1) or scenario == 20:
        parts.append(run.process_summary())
    parts.append(results.server.log_tail(4000))
    return "\n".join(parts)


@pytest.mark.compat
@pytest.mark.timeout(1200)  # the first test also pays for `npm ci` and the Node runs
@pytest.mark.parametrize(
    "scenario", list(SCENARIOS), ids=[f"s{n:02d}_{name}" for n, name in SCENARIOS.items()]
)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_scenario(request: pytest.FixtureRequest, encoding: str, scenario: int) -> None:
    # Scenario 20 restarts its server, so it has a server and a Node process of its own.
    fixture = "compat_restart_results" if scenario == 20 else "compat_results"
    results: CompatResults = request.getfixturevalue(fixture)
    report = _failure_report(results, encoding, scenario)
    if report is not None:
        pytest.fail(report, pytrace=False)
