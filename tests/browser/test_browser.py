"""Scenario 30 of client-protocol §15: a page using ``@rivetkit/react`` in headless Chromium.

The page (``src/app.jsx``, bundled by ``build.mjs``) is served from another origin than our
server; ``drive.mjs`` opens it once per encoding in Debian's Chromium through playwright-core
and checks, from the DOM and the browser's network events, that ``useActor`` reaches
``connStatus === "connected"``, that actions and raw requests work, that events broadcast by
another client are rendered live, and that the CORS answers (preflight included) let the browser
through.

The pinned ``@rivetkit/react`` is 2.3.11 (the newest published; no 2.3.19 exists) with
``rivetkit`` overridden to 2.3.19, the client version the rest of the suite targets.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import BrowserRun

ENCODINGS = ("json", "cbor", "bare")


@pytest.mark.compat
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first run may install npm packages and Chromium
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_react_page_in_chromium(browser_run: BrowserRun, encoding: str) -> None:
    lines = [ln for ln in browser_run.lines if ln.get("encoding") == encoding]
    start = next((ln for ln in lines if ln.get("type") == "start"), None)
    checks = {ln["check"]: ln for ln in lines if ln.get("type") == "check"}
    problems: list[str] = []
    if start is None:
        problems.append("the page was never opened for this encoding")
    else:
        missing = [name for name in start["checks"] if name not in checks]
        if missing:
            problems.append(f"checks that never reported: {', '.join(missing)}")
    failed = [ln for ln in checks.values() if not ln.get("ok")]
    if not problems and not failed:
        return
    parts = [f"browser page in {encoding}:"]
    passed = [name for name, ln in checks.items() if ln.get("ok")]
    if passed:
        parts.append(f"passed: {', '.join(passed)}")
    parts.extend(problems)
    for ln in failed:
        parts.append(f"✗ {ln['check']} ({ln.get('ms')} ms)\n  {ln.get('error')}")
        if ln.get("notes"):
            parts.append(f"  notes: {json.dumps(ln['notes'])}")
        if ln.get("console"):
            parts.append(f"  page console: {json.dumps(ln['console'])}")
    parts.append(browser_run.summary())
    pytest.fail("\n".join(parts), pytrace=False)
