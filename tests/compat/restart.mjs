#!/usr/bin/env node
// Scenario 20 of client-protocol.md §15: the server shuts down and comes back on the same port
// and storage; connections of the official client must come back by themselves.
//
//   node restart.mjs --endpoint http://127.0.0.1:PORT --encodings json,cbor,bare
//
// The server is stopped and started by the pytest side (conftest.py); the two talk over this
// process's stdin/stdout:
//
//   this process                               pytest
//   @@compat {"type":"phase","phase":"ready"}  → stops the server (SIGTERM, graceful)
//                                              ← "stopped"
//   @@compat {"type":"phase","phase":"down"}   → starts the server again (same port, storage)
//                                              ← "started"
//   check lines (scenario 20, per encoding), then {"type":"done"}
//
// One connection per encoding, all in this process, so one restart serves the three encodings.

import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";
import { createClient } from "rivetkit/client";
import { assert, describeError, emit, runScenario } from "./lib.mjs";
import { decodeToClient, decodeToServer, describeSocket, socketsWhere, sleep, track, waitFor, within } from "./wslib.mjs";

const { values: opts } = parseArgs({
	options: {
		endpoint: { type: "string" },
		encodings: { type: "string", default: "json,cbor,bare" },
		timeout: { type: "string", default: "100" },
		"reconnect-timeout": { type: "string", default: "20" },
	},
});
if (!opts.endpoint) {
	console.error("usage: restart.mjs --endpoint URL [--encodings json,cbor,bare]");
	process.exit(2);
}
const EP = opts.endpoint.replace(/\/+$/, "");
const ENCODINGS = opts.encodings.split(",").map((s) => s.trim());
const RECONNECT_MS = Number(opts["reconnect-timeout"]) * 1000;
const overall = setTimeout(() => {
	emit({ type: "fatal", error: `overall timeout of ${opts.timeout} s reached` });
	process.exit(3);
}, Number(opts.timeout) * 1000);
overall.unref();
process.on("unhandledRejection", (err) => emit({ type: "unhandled_rejection", error: describeError(err) }));

const eq = (actual, expected, msg) => assert.deepStrictEqual(actual, expected, msg);
const U = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

// stdin commands from pytest
const commands = [];
const waiters = [];
createInterface({ input: process.stdin }).on("line", (line) => {
	const w = waiters.shift();
	if (w) w(line.trim());
	else commands.push(line.trim());
});
function command(expected, ms = 60_000) {
	const next = commands.length ? Promise.resolve(commands.shift()) : new Promise((resolve) => waiters.push(resolve));
	return within(next, ms, `waiting for "${expected}" from pytest`).then((got) => {
		if (got !== expected) throw new Error(`expected "${expected}" from pytest, got "${got}"`);
		return performance.now();
	});
}

const setups = [];

async function setup(encoding) {
	const client = createClient({ endpoint: EP, encoding });
	const key = `s20-${encoding}-${U}`;
	const handle = client.chat.getOrCreate([key]);
	const conn = handle.connect();
	const t = track(conn);
	const events = [];
	conn.on("newCount", (v) => events.push(v));
	await within(conn.ready, 10_000, `${encoding}: conn.ready`);
	const before = await conn.increment(3);
	await waitFor(() => events.length === 1, `${encoding}: first event`, 3000);
	const sockets = () =>
		socketsWhere((url) => {
			const u = new URL(url);
			return u.pathname.endsWith("/connect") && u.searchParams.get("rvt-key") === key;
		});
	return { encoding, client, key, handle, conn, t, events, before, firstConnId: conn.connId, sockets, atDown: null };
}

function checksFor(s, times) {
	const describe = () => s.sockets().map((r) => describeSocket(r, s.encoding, 6));
	const wrap = (fn) => async (notes) => {
		try {
			await fn(notes);
		} catch (err) {
			notes.sockets = describe();
			notes.statuses = s.t.statuses;
			notes.errors = s.t.errors;
			notes.atDown = s.atDown;
			throw err;
		}
	};
	return [
		[
			"shutdown_closes_with_going_away",
			wrap(async (notes) => {
				eq(s.before, 3, "state before the restart");
				assert.ok(s.sockets()[0].closed, "the first socket was not closed by the shutdown");
				// Every socket the old server closed (it is gone at times.stopped) must tell the
				// client to come back: §8.7, §15.20.
				const byServer = s.sockets().filter((r) => r.closed && r.upgrade?.status === 101 && r.closed.t < times.stopped && !r.clientClose);
				notes.closes = byServer.map((r) => ({
					seq: r.seq,
					init: r.frames.some((f) => f.dir === "in" && decodeToClient(s.encoding, f).tag === "Init"),
					code: r.closed.code,
					reason: r.closed.reason,
				}));
				for (const c of notes.closes) {
					eq(c.reason, "ws.going_away", `socket ${c.seq} (Init received: ${c.init}) closed by the shutting-down server with ${c.code} "${c.reason}"`);
				}
			}),
		],
		[
			"no_unstructured_close_before_init",
			wrap(async () => {
				// §8.7/§15.20: a socket closed before Init with a reason the client does not retry
				// ends its reconnect loop for good.
				for (const rec of s.sockets().slice(1)) {
					const msgs = rec.frames.filter((f) => f.dir === "in").map((f) => decodeToClient(s.encoding, f));
					if (!rec.closed || msgs.some((m) => m.tag === "Init") || rec.upgrade === null) continue;
					assert.match(rec.closed.reason, /^ws\.going_away$|^actor\.(restarting|stopped)|^guard\./, `socket ${rec.seq} closed before Init with ${rec.closed.code} "${rec.closed.reason}"`);
				}
			}),
		],
		[
			"reconnects_when_server_is_back",
			wrap(async (notes) => {
				// "idle" is final: the client stopped reconnecting (ActorConnRaw#connectAndWait).
				const ok = await waitFor(
					() => s.conn.connStatus === "idle" || (s.conn.connStatus === "connected" && s.conn.connId !== s.firstConnId),
					`${s.encoding}: connected again after the restart`,
					Math.max(100, times.started + RECONNECT_MS - performance.now()),
				).catch((err) => err);
				notes.finalStatus = s.conn.connStatus;
				notes.attempts = s.sockets().map((r) => ({
					seq: r.seq,
					tOpenMs: Math.round(r.t0 - times.ready),
					upgrade: r.upgrade?.status ?? null,
					closed: r.closed && { code: r.closed.code, reason: r.closed.reason, tMs: Math.round(r.closed.t - times.ready) },
					error: r.error,
				}));
				notes.times = { stoppedMs: Math.round(times.stopped - times.ready), startedMs: Math.round(times.started - times.ready) };
				if (ok instanceof Error) throw ok;
				if (s.conn.connStatus === "idle") {
					const last = notes.attempts.at(-1);
					// Known limitation of rivetkit 2.3.19 (not of the server): a connection refused
					// before Init (nobody listens while the process restarts) ends the client's
					// reconnect loop. Accept exactly that case; anything else is a failure.
					const refusedInGap =
						last && last.upgrade === null && /ECONNREFUSED|ECONNRESET|socket hang up/.test(last.error ?? "") &&
						last.tOpenMs <= notes.times.startedMs + 5;
					const earlierAllGoingAway = notes.attempts.slice(0, -1).every((a) => a.closed?.reason === "ws.going_away");
					if (refusedInGap && earlierAllGoingAway) {
						notes.knownClientLimitation = "rivetkit 2.3.19 stops reconnecting when a connection is refused or reset before Init";
						s.gaveUpInGap = true;
						return;
					}
					assert.fail(
						`the client gave up reconnecting (status idle) after its attempt at ${last?.tOpenMs} ms ended with ` +
							`${last?.closed?.code} "${last?.closed?.reason ?? ""}" ${last?.error ?? ""}; ` +
							`the server was stopped at ${notes.times.stoppedMs} ms and back at ${notes.times.startedMs} ms`,
					);
				}
				const last = s.sockets().at(-1);
				assert.ok(last.t0 >= times.started - 1, "the live socket was opened after the server came back");
				const init = decodeToClient(s.encoding, last.frames.find((f) => f.dir === "in"));
				eq(init.tag, "Init");
				eq(init.val.connectionId, s.conn.connId);
				const seq = s.t.statuses.join(" → ");
				assert.ok(seq.startsWith("connected → disconnected → connecting"), `status sequence ${seq}`);
				assert.ok(seq.endsWith("connected"), `status sequence ${seq}`);
			}),
		],
		[
			"state_and_subscriptions_after_restart",
			wrap(async () => {
				if (s.gaveUpInGap) {
					// The official client gave up (see above): check the state through a new request.
					eq(await within(s.handle.getCount(), 5000, "getCount"), 3, "actor state persisted across the restart");
					return;
				}
				assert.equal(s.conn.connStatus, "connected", "not reconnected (see reconnects_when_server_is_back)");
				eq(await within(s.conn.getCount(), 5000, "getCount"), 3, "actor state persisted across the restart");
				const outs = s.sockets().at(-1).frames.filter((f) => f.dir === "out").map((f) => decodeToServer(s.encoding, f));
				eq(outs[0]?.val, { eventName: "newCount", subscribe: true }, "re-subscribed after the new Init");
				eq(await s.handle.increment(4), 7);
				await waitFor(() => s.events.length === 2, "event after the restart", 3000);
				eq(s.events, [3, 7]);
			}),
		],
		[
			"fresh_connection_after_restart",
			wrap(async (notes) => {
				// A new connection through the same client after the restart: server back, state kept.
				const conn = s.handle.connect();
				try {
					const got = [];
					conn.on("newCount", (v) => got.push(v));
					await within(conn.ready, 5000, "new conn.ready");
					const count = await conn.getCount();
					assert.ok(count === 3 || count === 7, `state after the restart: ${count} (3 before, 7 if the old connection also came back)`);
					const next = await s.handle.increment(10);
					eq(next, count + 10);
					await waitFor(() => got.length === 1, "event on the new connection", 3000);
					eq(got, [next]);
					notes.count = count;
				} finally {
					await within(conn.dispose(), 3000, "dispose").catch(() => {});
				}
			}),
		],
	];
}

async function main() {
	const times = {};
	for (const encoding of ENCODINGS) setups.push(await setup(encoding));
	times.ready = performance.now();
	emit({ type: "phase", phase: "ready", keys: setups.map((s) => s.key) });
	times.stopped = await command("stopped");
	for (const s of setups) s.atDown = { status: s.conn.connStatus, statuses: [...s.t.statuses], sockets: s.sockets().length };
	emit({ type: "phase", phase: "down", atDown: Object.fromEntries(setups.map((s) => [s.encoding, s.atDown])) });
	times.started = await command("started");
	let failed = 0;
	for (const s of setups) {
		const result = await runScenario({
			encoding: s.encoding,
			scenario: 20,
			title: "server restart",
			checks: checksFor(s, times),
			checkTimeoutMs: RECONNECT_MS + 10_000,
		});
		failed += result.failed;
	}
	await Promise.allSettled(setups.map((s) => within(s.client.dispose(), 3000, "dispose")));
	emit({ type: "done", failed });
	process.exit(failed ? 1 : 0);
}

main().catch((err) => {
	emit({ type: "fatal", error: describeError(err) });
	process.exit(1);
});
