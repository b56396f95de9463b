// Scenarios 13-19, 21-26 and 29 of client-protocol.md §15: connections (WebSocket /connect),
// events, raw handlers, skip-ready-wait and the actor router's own routes, driven by the official
// client. Scenario 20 (server restart) needs the pytest side and lives in restart.mjs.
//
// Every assertion is on a value the official client produced (return values, errors, status
// changes, event callbacks) or on the bytes that went over its real socket, recorded by
// wslib.mjs and decoded with this suite's own codec.

import { performance } from "node:perf_hooks";
import { ActorError } from "rivetkit/client";
import {
	assert,
	assertErrorCode,
	currentExchanges,
	decodeErrorBody,
	describeRaw,
	exchangesFor,
	onlyExchange,
	rawRequest,
	rejects,
} from "./lib.mjs";
import {
	RecordingWebSocket,
	decodeToClient,
	decodeToServer,
	describeSocket,
	encodeActionRequest,
	recordedSockets,
	sleep,
	socketsWhere,
	track,
	waitFor,
	within,
} from "./wslib.mjs";

/**
 * @param ctx.EP endpoint without trailing slash; ctx.EP_URL its URL; ctx.ENCODING;
 *   ctx.U a token unique to this process; ctx.POOL the pool the clients ask for (`rvt-runner`);
 *   ctx.client() makes a tracked official client.
 */
export function connScenarios(ctx) {
	const { EP, EP_URL, ENCODING, U, POOL } = ctx;
	const base = EP_URL.pathname.replace(/\/$/, "");
	const eq = (actual, expected, msg) => assert.deepStrictEqual(actual, expected, msg);
	const isNil = (v) => v === null || v === undefined;
	const textFrames = ENCODING === "json";

	/** Sockets of `/connect` (or another actor path) for a query-form handle with key `k`. */
	const queryPath = (k, suffix = "/connect") =>
		socketsWhere((url) => {
			const u = new URL(url);
			return u.pathname.endsWith(suffix) && u.searchParams.get("rvt-key") === k;
		});
	const inFrames = (rec) => rec.frames.filter((f) => f.dir === "in");
	const outFrames = (rec) => rec.frames.filter((f) => f.dir === "out");
	const decodedIn = (rec) => inFrames(rec).map((f) => decodeToClient(ENCODING, f));
	const decodedOut = (rec) => outFrames(rec).map((f) => decodeToServer(ENCODING, f));
	const describe = (recs) => recs.map((r) => describeSocket(r, ENCODING));

	/** Wrap a check: conns it opens via `open(conn)` are disposed at the end; sockets are noted on failure. */
	function withConns(fn, sockets = () => []) {
		return async (notes) => {
			const opened = [];
			const open = (conn) => {
				opened.push(conn);
				return conn;
			};
			try {
				return await fn(notes, open);
			} catch (err) {
				try {
					notes.sockets = describe(sockets(notes));
				} catch {}
				throw err;
			} finally {
				await within(Promise.allSettled(opened.map((c) => c.dispose())), 3000, "dispose").catch(() => {});
			}
		};
	}

	/** A fresh actor key for this process and check. */
	const K = (tag) => `${tag}-${U}`;

	/** Assert a frame is a text frame for json and a binary one for cbor/bare (§8.2). */
	function assertFrameKind(frame, what) {
		assert.equal(frame.binary, !textFrames, `${what}: expected a ${textFrames ? "text" : "binary"} frame`);
	}

	function assertBareVersion(msg, what) {
		if (ENCODING === "bare") eq(msg.version, 4, `${what}: BARE frames carry version 4`);
	}

	async function lifecycle(h) {
		return await h.lifecycle();
	}

	// -----------------------------------------------------------------------------------------
	// 13. connect(): subprotocol, Init first, ready, ids

	function scenario13() {
		const c = ctx.client();
		return [
			[
				"init_first_and_ready",
				withConns(
					async (notes, open) => {
						const k = K("s13");
						notes.key = k;
						const h = c.chat.getOrCreate([k]);
						const conn = open(h.connect());
						const t = track(conn);
						await within(conn.ready, 5000, "conn.ready");
						eq(conn.connStatus, "connected");
						assert.ok(typeof conn.actorId === "string" && conn.actorId.length > 0, `conn.actorId ${conn.actorId}`);
						assert.ok(typeof conn.connId === "string" && conn.connId.length > 0, `conn.connId ${conn.connId}`);
						const socks = queryPath(k);
						eq(socks.length, 1, "one socket opened");
						const rec = socks[0];
						const u = new URL(rec.url);
						eq(u.pathname, `${base}/gateway/chat/connect`);
						eq(
							[...u.searchParams.entries()],
							[
								["rvt-namespace", "default"],
								["rvt-method", "getOrCreate"],
								["rvt-runner", POOL],
								["rvt-key", k],
								["rvt-crash-policy", "sleep"],
							],
						);
						eq(rec.offered, ["rivet", `rivet_encoding.${ENCODING}`]);
						eq(rec.upgrade?.status, 101, "upgrade status");
						eq(rec.protocol, "rivet", "subprotocol selected by the server");
						const first = inFrames(rec)[0];
						assert.ok(first, "no frame received");
						assertFrameKind(first, "Init");
						const init = decodeToClient(ENCODING, first);
						eq(init.tag, "Init", "first frame must be Init");
						assertBareVersion(init, "Init");
						eq(init.val.actorId, conn.actorId);
						eq(init.val.connectionId, conn.connId);
						const who = await conn.whoami();
						eq(who.actorId, conn.actorId);
						eq(who.connId, conn.connId, "c.conn.id in an action over the socket");
						eq(who.key, [k]);
						eq(who.transient, false);
						eq(who.params, null, "no params");
						const viaHttp = await h.whoami();
						eq(viaHttp.actorId, conn.actorId, "HTTP action reaches the same actor");
						assert.notEqual(viaHttp.connId, conn.connId);
						eq(t.errors, []);
						eq(t.statuses, ["connected"]);
						eq(rec.closed, null, "socket still open");
						notes.ids = { actorId: conn.actorId, connId: conn.connId };
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"connect_by_id",
				withConns(
					async (notes, open) => {
						const k = K("s13id");
						const created = await c.chat.create([k]);
						const id = await created.resolve();
						notes.id = id;
						const conn = open(c.chat.getForId(id).connect());
						await within(conn.ready, 5000, "conn.ready");
						eq(conn.actorId, id);
						const rec = socketsWhere((url) => new URL(url).pathname === `${base}/gateway/${encodeURIComponent(id)}/connect`)[0];
						assert.ok(rec, "socket to /gateway/{id}/connect");
						eq(new URL(rec.url).search, "");
						eq(rec.protocol, "rivet");
						const init = decodeToClient(ENCODING, inFrames(rec)[0]);
						eq(init.tag, "Init");
						eq(init.val.actorId, id);
						eq((await conn.whoami()).connId, conn.connId);
					},
					(notes) => socketsWhere(notes.id ?? "\u0000"),
				),
			],
			[
				"params_reach_the_connection",
				withConns(
					async (notes, open) => {
						const k = K("s13p");
						notes.key = k;
						const params = { user: "ann", n: 1, nested: { ok: true } };
						const h = c.chat.getOrCreate([k], { params });
						const conn = open(h.connect());
						await within(conn.ready, 5000, "conn.ready");
						const rec = queryPath(k)[0];
						eq(rec.offered, ["rivet", `rivet_encoding.${ENCODING}`, `rivet_conn_params.${encodeURIComponent(JSON.stringify(params))}`]);
						eq(rec.protocol, "rivet");
						const who = await conn.whoami();
						eq(who.params, params, "c.conn.params");
						eq(who.connState, { n: 0 }, "c.conn.state from conn_state=");
						const other = { override: "yes" };
						const conn2 = open(h.connect(other));
						await within(conn2.ready, 5000, "conn2.ready");
						eq((await conn2.whoami()).params, other, "connect(params) overrides the handle's params");
						const seen = (await lifecycle(h)).paramsSeen;
						eq(seen.find((e) => e.connId === conn.connId)?.params, params, "on_connect saw the params");
						eq(seen.find((e) => e.connId === conn2.connId)?.params, other);
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"conn_state_per_connection",
				withConns(async (notes, open) => {
					const h = c.chat.getOrCreate([K("s13s")]);
					const a = open(h.connect());
					const b = open(h.connect());
					await within(Promise.all([a.ready, b.ready]), 5000, "ready");
					eq(await a.bumpConnState(), 1);
					eq(await a.bumpConnState(), 2);
					eq(await b.bumpConnState(), 1, "another connection has its own state");
					eq(await a.bumpConnState(), 3);
					eq(await h.bumpConnState(), 1, "an HTTP action gets a fresh transient connection");
					const life = await lifecycle(h);
					for (const conn of [a, b]) assert.ok(life.connected.includes(conn.connId), `on_connect ran for ${conn.connId}`);
					eq((await h.connIds()).sort(), [a.connId, b.connId].sort(), "c.conns lists both sockets");
				}),
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 14. Events

	function scenario14() {
		const c = ctx.client();
		return [
			[
				"subscribe_before_ready_then_broadcast",
				withConns(
					async (notes, open) => {
						const k = K("s14");
						notes.key = k;
						const h = c.chat.getOrCreate([k]);
						const conn = open(h.connect());
						const got = [];
						conn.on("newCount", (...args) => got.push(args));
						await within(conn.ready, 5000, "conn.ready");
						const value = await conn.increment(5);
						eq(value, 5);
						await waitFor(() => got.length >= 1, "newCount event", 3000);
						eq(got, [[5]], "callback(x) with the broadcast value");
						const rec = queryPath(k)[0];
						const outs = decodedOut(rec);
						eq(outs[0], { tag: "SubscriptionRequest", val: { eventName: "newCount", subscribe: true }, ...(ENCODING === "bare" ? { version: 4 } : {}) }, "subscription is the first frame after Init");
						const events = decodedIn(rec).filter((m) => m.tag === "Event");
						eq(events.length, 1);
						eq(events[0].val.name, "newCount");
						eq(events[0].val.args, [5], "Event.args is an array");
						assertFrameKind(inFrames(rec).find((f) => decodeToClient(ENCODING, f).tag === "Event"), "Event");
						await h.increment(2);
						await waitFor(() => got.length >= 2, "event from an HTTP action's broadcast", 3000);
						eq(got[1], [7]);
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"unsubscribed_connection_gets_nothing",
				withConns(
					async (notes, open) => {
						const k = K("s14n");
						notes.key = k;
						const h = c.chat.getOrCreate([k]);
						const listener = open(h.connect());
						const silent = open(h.connect());
						const got = [];
						listener.on("newCount", (v) => got.push(v));
						await within(Promise.all([listener.ready, silent.ready]), 5000, "ready");
						await listener.getCount(); // the subscription frame went before this action
						await h.increment(3);
						await waitFor(() => got.length === 1, "event on the subscribed connection", 3000);
						await silent.getCount(); // anything sent to `silent` before this response has arrived now
						const rec = queryPath(k).find((r) => decodedIn(r)[0]?.val?.connectionId === silent.connId);
						assert.ok(rec, "socket of the silent connection");
						eq(decodedIn(rec).filter((m) => m.tag === "Event"), [], "no Event frame without a subscription");
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"unsubscribe_stops_delivery",
				withConns(
					async (notes, open) => {
						const k = K("s14u");
						notes.key = k;
						const h = c.chat.getOrCreate([k]);
						const conn = open(h.connect());
						const got = [];
						const unsubscribe = conn.on("newCount", (v) => got.push(v));
						await within(conn.ready, 5000, "conn.ready");
						eq(await conn.increment(1), 1);
						await waitFor(() => got.length === 1, "first event", 3000);
						unsubscribe();
						const rec = queryPath(k)[0];
						const unsubFrame = outFrames(rec).at(-1);
						eq(decodeToServer(ENCODING, unsubFrame).val, { eventName: "newCount", subscribe: false }, "unsubscribe frame");
						eq(await conn.increment(1), 2);
						await h.increment(1);
						await conn.getCount();
						eq(got, [1], "no callback after unsubscribe");
						const late = inFrames(rec).filter((f) => f.t > unsubFrame.t && decodeToClient(ENCODING, f).tag === "Event");
						eq(late.length, 0, "the server kept sending events after subscribe:false");
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"once_fires_once",
				withConns(
					async (notes, open) => {
						const k = K("s14o");
						notes.key = k;
						const h = c.chat.getOrCreate([k]);
						const conn = open(h.connect());
						const got = [];
						conn.once("newCount", (v) => got.push(v));
						await within(conn.ready, 5000, "conn.ready");
						eq(await conn.increment(1), 1);
						eq(await conn.increment(1), 2);
						await conn.getCount();
						eq(got, [1], "once() listener called exactly once");
						// §8.2: the client drops the second event locally without sending subscribe:false.
						const events = decodedIn(queryPath(k)[0]).filter((m) => m.tag === "Event");
						eq(events.map((e) => e.val.args), [[1], [2]], "both events on the wire");
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"conn_send_reaches_one_connection",
				withConns(
					async (notes, open) => {
						const k = K("s14s");
						notes.key = k;
						const h = c.chat.getOrCreate([k]);
						const a = open(h.connect());
						const b = open(h.connect());
						const gotA = [];
						const gotB = [];
						a.on("message", (v) => gotA.push(v));
						b.on("message", (v) => gotB.push(v));
						await within(Promise.all([a.ready, b.ready]), 5000, "ready");
						await b.getCount();
						eq(await a.sendToMe({ to: "a" }), a.connId);
						await waitFor(() => gotA.length === 1, "event from c.conn.send", 3000);
						eq(gotA, [{ to: "a" }]);
						await b.getCount();
						eq(gotB, [], "the other connection got the private event");
						await h.shout("message", "all");
						await waitFor(() => gotA.length === 2 && gotB.length === 1, "broadcast to both", 3000);
						eq([gotA[1], gotB[0]], ["all", "all"]);
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"can_subscribe_allows",
				withConns(async (notes, open) => {
					const k = K("s14a");
					const h = c.chat.getOrCreate([k]);
					const admin = open(c.chat.getOrCreate([k], { params: { admin: true } }).connect());
					const got = [];
					admin.on("secret", (v) => got.push(v));
					await within(admin.ready, 5000, "ready");
					await admin.getCount();
					await h.shout("secret", "s3cr3t");
					await waitFor(() => got.length === 1, "secret event for an admin", 3000);
					eq(got, ["s3cr3t"]);
					eq(admin.connStatus, "connected");
				}),
			],
			[
				"can_subscribe_refuses",
				withConns(
					async (notes, open) => {
						// §8.6: a refused subscription closes the socket 1011 "{group}.{code}".
						const k = K("s14r");
						notes.key = k;
						const h = c.chat.getOrCreate([k]);
						const conn = open(h.connect());
						const t = track(conn);
						const got = [];
						conn.on("secret", (v) => got.push(v));
						await within(conn.ready, 5000, "conn.ready");
						const rec = queryPath(k)[0];
						await waitFor(() => rec.closed, "the server to close the socket after the refused subscription", 3000);
						notes.closed = rec.closed;
						notes.errors = t.errors;
						await conn.dispose();
						eq(rec.closed.code, 1011, "close code");
						assert.match(rec.closed.reason, /^[a-z_]+\.[a-z_]+(#.*)?$/, "close reason is group.code");
						const [group, code] = rec.closed.reason.split("#")[0].split(".");
						assert.ok(t.errors.some((e) => e.group === group && e.code === code), "conn.onError saw the refusal");
						await h.shout("secret", "nope");
						eq(got, [], "refused subscriber got the event");
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 15. Actions over the socket: typed ids, concurrency, out-of-order completion

	function connectUrl(k) {
		const q = new URLSearchParams([
			["rvt-namespace", "default"],
			["rvt-method", "getOrCreate"],
			["rvt-runner", POOL],
			["rvt-key", k],
			["rvt-crash-policy", "sleep"],
		]);
		return `${EP}/gateway/chat/connect?${q}`;
	}

	/** A raw `ws` socket speaking the connection protocol by hand; resolves once open. */
	async function rawConnect(k, extraProtocols = []) {
		const ws = new RecordingWebSocket(connectUrl(k), ["rivet", `rivet_encoding.${ENCODING}`, ...extraProtocols]);
		ws.binaryType = "arraybuffer";
		await within(
			new Promise((resolve, reject) => {
				ws.once("open", resolve);
				ws.once("error", reject);
			}),
			5000,
			"raw socket open",
		);
		return ws;
	}

	function scenario15() {
		const c = ctx.client();
		return [
			[
				"ids_are_bigint_typed",
				withConns(
					async (notes, open) => {
						const k = K("s15");
						notes.key = k;
						const conn = open(c.chat.getOrCreate([k]).connect());
						await within(conn.ready, 5000, "conn.ready");
						eq(await conn.echo("a"), "a");
						eq(await conn.increment(4), 4);
						const err = await rejects(conn.fail(), "fail()");
						assertErrorCode(err, "user", "my_code");
						const rec = queryPath(k)[0];
						const requests = decodedOut(rec).filter((m) => m.tag === "ActionRequest");
						eq(requests.map((m) => [m.val.id, m.val.name]), [[0n, "echo"], [1n, "increment"], [2n, "fail"]]);
						const replies = inFrames(rec)
							.map((f) => [f, decodeToClient(ENCODING, f)])
							.filter(([, m]) => m.tag !== "Init");
						eq(replies.map(([, m]) => m.tag), ["ActionResponse", "ActionResponse", "Error"]);
						for (const [frame, m] of replies) {
							assertFrameKind(frame, m.tag);
							assert.ok(m.idTyped, `${m.tag} id is not BigInt-typed on the wire: ${describeSocket(rec, ENCODING).frames.map((x) => x.raw).join(" | ")}`);
						}
						eq(replies.map(([, m]) => (m.tag === "Error" ? m.val.actionId : m.val.id)), [0n, 1n, 2n]);
						if (ENCODING === "json") {
							const text = new TextDecoder().decode(replies[0][0].bytes);
							assert.ok(text.includes('"id":["$BigInt","0"]'), `JSON id form: ${text}`);
						}
						if (ENCODING === "cbor") {
							const hexed = Buffer.from(replies[1][0].bytes).toString("hex");
							assert.ok(hexed.includes("6269641b0000000000000001"), `CBOR id must be 1b + 8 bytes: ${hexed}`);
						}
						notes.frames = describeSocket(rec, ENCODING).frames.map((f) => f.raw);
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"raw_socket_ids",
				async (notes) => {
					// Our own socket next to the client: ids beyond 2^53, and (json, cbor) plain-number ids,
					// which the official server accepts; replies must carry BigInt-typed ids either way.
					const k = K("s15raw");
					const ws = await rawConnect(k);
					try {
						await waitFor(() => ws.rec.frames.some((f) => f.dir === "in"), "Init on the raw socket", 5000);
						eq(decodeToClient(ENCODING, inFrames(ws.rec)[0]).tag, "Init");
						const ids = [7n, 2n ** 40n + 3n, 2n ** 53n + 1n, 2n ** 63n + 5n];
						const plain = ENCODING === "bare" ? [] : [11];
						for (const id of [...ids, ...plain]) ws.send(encodeActionRequest(ENCODING, id, "echo", [`v${id}`]));
						const want = ids.length + plain.length;
						await waitFor(() => inFrames(ws.rec).length >= 1 + want, `${want} replies`, 5000);
						const replies = decodedIn(ws.rec).slice(1);
						notes.replies = describeSocket(ws.rec, ENCODING).frames.map((f) => f.raw);
						for (const m of replies) {
							eq(m.tag, "ActionResponse");
							assert.ok(m.idTyped, `reply id ${m.val.id} is not BigInt-typed`);
							eq(m.val.output, `v${m.val.id}`, "reply matches its request");
						}
						eq(replies.map((m) => BigInt(m.val.id)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), [...ids, ...plain.map(BigInt)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
					} finally {
						ws.terminate();
					}
				},
			],
			[
				"ten_concurrent_out_of_order",
				withConns(
					async (notes, open) => {
						const k = K("s15c");
						notes.key = k;
						const conn = open(c.chat.getOrCreate([k]).connect());
						await within(conn.ready, 5000, "conn.ready");
						const t0 = performance.now();
						// countdown(i) completes only after every higher i: out of order by construction.
						const tags = Array.from({ length: 10 }, (_, i) => i);
						const outputs = await within(Promise.all(tags.map((i) => conn.countdown(i))), 8000, "10 actions");
						notes.ms = Math.round(performance.now() - t0);
						eq(outputs, tags, "every call got its own output");
						const rec = queryPath(k)[0];
						const replyIds = decodedIn(rec)
							.filter((m) => m.tag === "ActionResponse")
							.map((m) => Number(m.val.id));
						notes.replyOrder = replyIds;
						eq(replyIds, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], "responses in completion order (highest tag first)");
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 16. Action errors over the socket

	function scenario16() {
		const c = ctx.client();
		return [
			[
				"user_error_keeps_connection",
				withConns(
					async (notes, open) => {
						const k = K("s16");
						notes.key = k;
						const conn = open(c.chat.getOrCreate([k]).connect());
						const t = track(conn);
						await within(conn.ready, 5000, "conn.ready");
						const err = await rejects(conn.fail(), "fail()");
						assert.ok(err instanceof ActorError, `expected ActorError, got ${err?.name}`);
						assertErrorCode(err, "user", "my_code");
						eq(err.message, "boom happened");
						eq(err.metadata, { a: 1 });
						assert.ok(err.actor, "Error frame names the actor (v4 ActorSpecifier)");
						eq(err.actor.actorId, conn.actorId);
						eq(err.actor.key, k);
						assert.ok(Number.isInteger(err.actor.generation), `generation ${err.actor.generation}`);
						const rec = queryPath(k)[0];
						const frame = decodedIn(rec).find((m) => m.tag === "Error");
						eq(frame.val.actionId, 0n);
						eq(await conn.increment(2), 2, "connection still usable");
						eq(conn.connStatus, "connected");
						eq(t.statuses, ["connected"]);
						eq(rec.closed, null);
						eq(t.errors, [], "action errors do not reach conn.onError");
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"internal_error_masked",
				withConns(
					async (notes, open) => {
						const k = K("s16i");
						notes.key = k;
						const conn = open(c.chat.getOrCreate([k]).connect());
						await within(conn.ready, 5000, "conn.ready");
						const err = await rejects(conn.boom(), "boom()");
						assertErrorCode(err, "rivetkit", "internal_error");
						eq(err.message, "An internal error occurred");
						assert.ok(isNil(err.metadata), `metadata ${JSON.stringify(err.metadata)}`);
						const rec = queryPath(k)[0];
						for (const f of inFrames(rec)) assert.ok(!Buffer.from(f.bytes).toString("latin1").includes("secret"), "exception text leaked");
						eq(await conn.echo(1), 1);
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"unknown_action",
				withConns(async (notes, open) => {
					const conn = open(c.chat.getOrCreate([K("s16u")]).connect());
					await within(conn.ready, 5000, "conn.ready");
					const err = await rejects(conn.action({ name: "nope", args: [] }), "unknown action");
					assertErrorCode(err, "actor", "action_not_found");
					notes.message = err.message;
					eq(await conn.echo("still"), "still");
					eq(conn.connStatus, "connected");
				}),
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 17. Connection rejected in on_before_connect

	function scenario17() {
		const c = ctx.client();
		return [
			[
				"rejected_connection",
				withConns(
					async (notes, open) => {
						const k = K("s17");
						notes.key = k;
						const conn = open(c.chat.getOrCreate([k], { params: { reject: true } }).connect());
						const t = track(conn);
						const pending = conn.getCount();
						pending.catch(() => {});
						const err = await within(rejects(pending, "action on a rejected connection"), 5000, "pending action");
						assertErrorCode(err, "user", "rejected");
						await waitFor(() => queryPath(k)[0]?.closed, "socket closed", 3000);
						await sleep(600); // a retry would have opened a second socket by now (250 ms backoff)
						notes.statuses = t.statuses;
						notes.errors = t.errors;
						const socks = queryPath(k);
						eq(socks.length, 1, "no reconnect after a rejection");
						const rec = socks[0];
						eq(rec.upgrade?.status, 101, "the upgrade is accepted, the refusal is in-band (§8.1)");
						const msgs = decodedIn(rec);
						eq(msgs.map((m) => m.tag), ["Error"], "exactly one Error frame and no Init");
						const e = msgs[0].val;
						eq([e.group, e.code, e.message], ["user", "rejected", "connection rejected"]);
						eq(e.metadata, { why: "test" });
						assert.ok(isNil(e.actionId), `actionId must be null, got ${e.actionId}`);
						if (ENCODING === "json") {
							const text = new TextDecoder().decode(inFrames(rec)[0].bytes);
							assert.ok(text.includes('"actionId":null'), `JSON Error must carry "actionId":null: ${text}`);
						}
						eq(rec.closed.code, 1011, "close code");
						assert.match(rec.closed.reason, /^user\.rejected(#.*)?$/, "close reason");
						assert.ok(!t.statuses.includes("connected"), `statuses ${t.statuses}`);
						assert.ok(["idle", "disconnected"].includes(conn.connStatus), `final status ${conn.connStatus}`);
						const withMeta = t.errors.find((x) => x.group === "user" && x.code === "rejected" && x.metadata?.why === "test");
						assert.ok(withMeta, `conn.onError got the Error frame's content: ${JSON.stringify(t.errors)}`);
						eq(withMeta.message, "connection rejected");
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 18. Connect to a missing actor

	function scenario18() {
		const c = ctx.client();
		return [
			[
				"get_missing_keeps_retrying",
				withConns(
					async (notes, open) => {
						const k = K("s18");
						notes.key = k;
						const conn = open(c.chat.get([k]).connect());
						const t = track(conn);
						await waitFor(() => queryPath(k).filter((r) => r.closed).length >= 2, "two closed attempts", 5000);
						notes.statuses = t.statuses;
						const first = queryPath(k)[0];
						eq(first.upgrade?.status, 101, "upgrade accepted, failure reported by the close frame (§8.6)");
						eq(first.closed.code, 1011);
						assert.match(first.closed.reason, /^actor\.not_found(#.*)?$/);
						eq(decodedIn(first).filter((m) => m.tag === "Init"), [], "no Init for a missing actor");
						assert.notEqual(conn.connStatus, "idle", "a get() handle keeps retrying");
						assert.notEqual(conn.connStatus, "connected");
						await conn.dispose();
						const count = queryPath(k).length;
						await sleep(700);
						eq(queryPath(k).length, count, "no attempt after dispose");
						eq(conn.connStatus, "idle");
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
			[
				"get_for_unknown_id_goes_idle",
				withConns(
					async (notes, open) => {
						const real = await c.chat.create([K("s18id")]).then((h) => h.resolve());
						const id = mutateId(real);
						notes.id = id;
						const conn = open(c.chat.getForId(id).connect());
						const t = track(conn);
						await waitFor(() => conn.connStatus === "idle", "status idle", 5000);
						await sleep(400);
						const socks = socketsWhere(`/gateway/${encodeURIComponent(id)}/connect`);
						eq(socks.length, 1, "no retry for getForId");
						eq(socks[0].closed?.code, 1011);
						assert.match(socks[0].closed.reason, /^actor\.not_found(#.*)?$/);
						assert.ok(t.errors.some((e) => e.group === "actor" && e.code === "not_found"), `errors ${JSON.stringify(t.errors)}`);
					},
					(notes) => socketsWhere(notes.id ?? "\u0000"),
				),
			],
		];
	}

	function mutateId(id) {
		const rot = (ch) => {
			if (ch >= "0" && ch <= "9") return String((Number(ch) + 1) % 10);
			if (ch >= "a" && ch <= "z") return String.fromCharCode(((ch.charCodeAt(0) - 97 + 1) % 26) + 97);
			if (ch >= "A" && ch <= "Z") return String.fromCharCode(((ch.charCodeAt(0) - 65 + 1) % 26) + 65);
			return ch;
		};
		return [...id].map((ch, i) => (i < 8 ? rot(ch) : ch)).join("");
	}

	// -----------------------------------------------------------------------------------------
	// 19. Server-initiated disconnect → reconnect

	function scenario19() {
		const c = ctx.client();
		return [
			[
				"conn_disconnect_then_reconnect",
				withConns(
					async (notes, open) => {
						const k = K("s19");
						notes.key = k;
						const h = c.chat.getOrCreate([k]);
						const conn = open(h.connect());
						const t = track(conn);
						const got = [];
						conn.on("newCount", (v) => got.push(v));
						await within(conn.ready, 5000, "conn.ready");
						const firstId = conn.connId;
						let queued;
						let sawDisconnected = false;
						conn.onStatusChange((s) => {
							if (s === "disconnected") sawDisconnected = true;
							// Called while reconnecting: queued, then flushed after the next Init.
							if (s === "connecting" && sawDisconnected && !queued) queued = conn.echo("queued");
						});
						eq(await h.disconnectConn(firstId, "bye"), true);
						await waitFor(() => conn.connStatus === "connected" && conn.connId && conn.connId !== firstId, "reconnected with a new Init", 5000);
						notes.statuses = t.statuses;
						eq(t.statuses, ["connected", "disconnected", "connecting", "connected"], "onStatusChange sequence");
						const socks = queryPath(k);
						eq(socks.length, 2);
						eq(socks[0].closed?.code, 1000, "conn.disconnect() closes with 1000");
						eq(socks[0].closed?.reason, "bye", "with the reason given");
						const init2 = decodedIn(socks[1])[0];
						eq(init2.tag, "Init");
						eq(init2.val.connectionId, conn.connId);
						eq(init2.val.actorId, conn.actorId);
						assert.ok(queued, "no action was queued while reconnecting");
						eq(await within(queued, 3000, "queued action"), "queued", "queued action flushed after Init");
						const outs = decodedOut(socks[1]);
						eq(outs[0].tag, "SubscriptionRequest", "re-subscribe first after Init");
						eq(outs[0].val, { eventName: "newCount", subscribe: true });
						assert.ok(outs.some((m) => m.tag === "ActionRequest" && m.val.name === "echo"), "queued action sent on the new socket");
						await h.increment(2);
						await waitFor(() => got.length === 1, "event after reconnect", 3000);
						eq(got, [2]);
						await waitFor(async () => (await lifecycle(h)).disconnected.includes(firstId), "on_disconnect for the old connection", 3000);
						eq(await h.connIds(), [conn.connId]);
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 21. dispose()

	function scenario21() {
		const c = ctx.client();
		return [
			[
				"dispose_closes_1000_and_runs_on_disconnect",
				withConns(
					async (notes, open) => {
						const k = K("s21");
						notes.key = k;
						const h = c.chat.getOrCreate([k]);
						const conn = open(h.connect());
						await within(conn.ready, 5000, "conn.ready");
						const id = conn.connId;
						eq(await h.connIds(), [id]);
						await within(conn.dispose(), 3000, "dispose()");
						eq(conn.connStatus, "idle");
						const rec = queryPath(k)[0];
						eq(rec.clientClose?.code, 1000);
						eq(rec.clientClose?.reason, "Disposed");
						eq(rec.closed?.code, 1000, "server completes the closing handshake");
						await waitFor(async () => (await lifecycle(h)).disconnected.includes(id), "on_disconnect ran", 3000);
						eq(await h.connIds(), [], "connection removed from c.conns");
						const err = await rejects(Promise.resolve().then(() => conn.getCount()), "action after dispose");
						notes.afterDispose = `${err?.name}: ${err?.message}`;
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 22. Oversized frame

	function scenario22() {
		const c = ctx.client();
		return [
			[
				"incoming_too_long",
				withConns(
					async (notes, open) => {
						const k = K("s22");
						notes.key = k;
						const conn = open(c.chat.getOrCreate([k]).connect());
						const t = track(conn);
						await within(conn.ready, 5000, "conn.ready");
						eq(await conn.size("x".repeat(60_000)), 60_000, "a 60 kB frame is fine");
						const firstId = conn.connId;
						const err = await rejects(conn.size("y".repeat(70_000)), "70 kB frame");
						const rec = queryPath(k)[0];
						const big = outFrames(rec).at(-1);
						notes.bigFrameBytes = big.bytes.length;
						assert.ok(big.bytes.length > 64 * 1024, `frame sent is ${big.bytes.length} bytes`);
						await waitFor(() => rec.closed, "socket closed", 3000);
						eq(rec.closed.code, 1011, "close code");
						assert.match(rec.closed.reason, /^message\.incoming_too_long(#.*)?$/, "close reason");
						assertErrorCode(err, "message", "incoming_too_long");
						await waitFor(() => conn.connStatus === "connected" && conn.connId !== firstId, "reconnect", 5000);
						eq(await conn.size("ok"), 2, "usable after reconnecting");
						notes.statuses = t.statuses;
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 23. getParams resolver on every (re)connect

	function scenario23() {
		const c = ctx.client();
		return [
			[
				"get_params_per_connect",
				withConns(
					async (notes, open) => {
						const k = K("s23");
						notes.key = k;
						let calls = 0;
						const h = c.chat.getOrCreate([k], {
							getParams: async () => {
								calls += 1;
								await sleep(5);
								return { attempt: calls, user: "p" };
							},
						});
						const control = c.chat.getOrCreate([k]);
						const conn = open(h.connect());
						await within(conn.ready, 5000, "conn.ready");
						eq((await conn.whoami()).params, { attempt: 1, user: "p" });
						const firstId = conn.connId;
						await control.disconnectConn(firstId, "again");
						await waitFor(() => conn.connStatus === "connected" && conn.connId !== firstId, "reconnected", 5000);
						eq((await conn.whoami()).params, { attempt: 2, user: "p" }, "params of the new connection");
						const socks = queryPath(k);
						eq(socks.length, 2);
						eq(calls, 2, "getParams called once per connect");
						for (const [i, rec] of socks.entries()) {
							const expected = `rivet_conn_params.${encodeURIComponent(JSON.stringify({ attempt: i + 1, user: "p" }))}`;
							eq(rec.offered.at(-1), expected, `subprotocols of socket ${i + 1}`);
						}
						const seen = (await lifecycle(control)).paramsSeen.map((e) => e.params);
						eq(seen, [{ attempt: 1, user: "p" }, { attempt: 2, user: "p" }], "on_connect saw both");
					},
					(notes) => queryPath(notes.key ?? ""),
				),
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 24. Raw HTTP: handle.fetch → on_request

	async function json(res) {
		const text = await res.text();
		try {
			return JSON.parse(text);
		} catch {
			assert.fail(`status ${res.status}: not JSON: ${text.slice(0, 400)}`);
		}
	}

	const b64 = (s) => Buffer.from(s).toString("base64");

	function scenario24() {
		const c = ctx.client();
		return [
			[
				"query_headers_and_rvt_stripped",
				async (notes) => {
					const k = K("s24");
					const h = c.raw.getOrCreate([k]);
					const res = await h.fetch("/hello?x=1&y=two+2", { headers: { "x-test": "a" } });
					eq(res.status, 200);
					eq(res.headers.get("x-handled-by"), "raw", "handler's header returned");
					const body = await json(res);
					notes.url = body.url;
					eq(body.method, "GET");
					eq(body.path, "/hello", "the /request prefix is stripped");
					eq(body.query, [["x", "1"], ["y", "two 2"]], "rvt-* stripped, user query kept");
					assert.ok(!body.url.includes("rvt-"), `url seen: ${body.url}`);
					eq(body.headers["x-test"], "a");
					eq(body.conn?.params ?? null, null, "no params");
					const ex = onlyExchange(`${base}/gateway/raw/request/hello`, "GET");
					const sent = new URL(ex.url);
					eq(sent.searchParams.get("x"), "1");
					eq(sent.searchParams.get("rvt-method"), "getOrCreate");
					eq(body.actorId, (await h.whoami()).actorId);
				},
			],
			[
				"post_bodies",
				async (notes) => {
					const k = K("s24p");
					const h = c.raw.getOrCreate([k]);
					const res = await h.fetch("/echo", { method: "POST", body: "hello body", headers: { "content-type": "text/plain" } });
					const body = await json(res);
					eq([body.method, body.path, body.body], ["POST", "/echo", b64("hello body")]);
					eq(body.headers["content-type"], "text/plain");
					// A direct handle sends a ReadableStream body as it is (chunked).
					const id = await (await c.raw.create([`${k}-d`])).resolve();
					const parts = ["chunk-1;", "chunk-2;", "chunk-3"];
					const stream = new ReadableStream({
						async pull(controller) {
							const next = parts.shift();
							if (next === undefined) controller.close();
							else {
								await sleep(20);
								controller.enqueue(new TextEncoder().encode(next));
							}
						},
					});
					const res2 = await c.raw.getForId(id).fetch("/stream", { method: "POST", body: stream, duplex: "half" });
					const body2 = await json(res2);
					eq(body2.body, b64("chunk-1;chunk-2;chunk-3"), "streamed body");
					eq(body2.actorId, id);
					const ex = onlyExchange(`${base}/gateway/${encodeURIComponent(id)}/request/stream`, "POST");
					notes.transferEncoding = ex.reqHeaders["transfer-encoding"];
				},
			],
			[
				"status_headers_body_verbatim",
				async () => {
					const h = c.raw.getOrCreate([K("s24s")]);
					const res = await h.fetch("/status/418");
					eq(res.status, 418);
					eq(res.headers.get("x-custom"), "yes");
					eq(await res.text(), "teapot");
					const res404 = await h.fetch("/status/404");
					eq(res404.status, 404);
					eq(await res404.text(), "status 404", "a user 404 without an error envelope is returned as is");
					eq(exchangesFor(`${base}/gateway/raw/request/status/404`).length, 1, "not retried");
				},
			],
			[
				"binary_put_direct",
				async () => {
					const id = await (await c.raw.create([K("s24b")])).resolve();
					const res = await c.raw.getForId(id).fetch("/binary", { method: "PUT", body: new Uint8Array([1, 2, 3, 255]) });
					eq(res.status, 200);
					eq(res.headers.get("content-type"), "application/octet-stream");
					eq([...new Uint8Array(await res.arrayBuffer())], [255, 3, 2, 1]);
					onlyExchange(`${base}/gateway/${encodeURIComponent(id)}/request/binary`, "PUT");
				},
			],
			[
				"original_request_url",
				async () => {
					const h = c.raw.getOrCreate([K("s24o")]);
					const req = new Request("http://example.com/api/thing?q=2", { method: "POST", body: "payload", headers: { "content-type": "text/plain" } });
					const res = await h.fetch(req);
					const body = await json(res);
					const ex = onlyExchange(`${base}/gateway/raw/request/api/thing`, "POST");
					eq(ex.reqHeaders["x-rivet-internal-original-request-url"], "http://example.com/api/thing?q=2");
					eq(body.url, "http://example.com/api/thing?q=2", "request.url is the original URL (§9.1)");
					eq([body.path, body.query, body.body], ["/api/thing", [["q", "2"]], b64("payload")]);
				},
			],
			[
				"conn_hooks_and_params",
				async (notes) => {
					const k = K("s24c");
					const params = { p: 1, who: "fetch" };
					const res = await c.raw.getOrCreate([k], { params }).fetch("/p");
					const body = await json(res);
					eq(body.conn?.params, params, "c.conn.params in on_request");
					eq(body.conn?.state, { made_by: "create_conn_state" });
					const rejected = await c.raw.getOrCreate([k], { params: { reject: true } }).fetch("/p");
					const text = await rejected.text();
					notes.rejected = { status: rejected.status, contentType: rejected.headers.get("content-type"), text };
					assert.ok(rejected.status >= 400, `status ${rejected.status}`);
					const err = JSON.parse(text);
					eq([err.group, err.code, err.message], ["user", "rejected", "connection rejected"]);
				},
			],
			[
				"sse_streaming_response",
				async (notes) => {
					const h = c.raw.getOrCreate([K("s24e")]);
					const res = await h.fetch("/sse?n=4");
					eq(res.status, 200);
					assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
					const reader = res.body.getReader();
					const chunks = [];
					for (;;) {
						const { done, value } = await reader.read();
						if (done) break;
						chunks.push({ t: performance.now(), text: new TextDecoder().decode(value) });
					}
					const text = chunks.map((x) => x.text).join("");
					const events = text
						.split("\n\n")
						.filter((x) => x.trim())
						.map((block) => JSON.parse(block.split("\n").find((l) => l.startsWith("data: ")).slice(6)));
					eq(events.map((e) => e.i), [0, 1, 2, 3]);
					notes.chunks = chunks.length;
					notes.spreadMs = Math.round(chunks.at(-1).t - chunks[0].t);
					assert.ok(chunks.length >= 2 && notes.spreadMs >= 60, `the response was buffered: ${chunks.length} chunk(s) over ${notes.spreadMs} ms`);
				},
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 25. Raw WebSocket: handle.webSocket → on_websocket

	/** Message queue over a raw WebSocket returned by handle.webSocket(). */
	function inbox(ws) {
		const queue = [];
		const waiters = [];
		ws.addEventListener("message", (ev) => {
			const item = ev.data;
			const w = waiters.shift();
			if (w) w(item);
			else queue.push(item);
		});
		const closed = new Promise((resolve) => ws.addEventListener("close", (ev) => resolve({ code: ev.code, reason: ev.reason })));
		return {
			next: (what = "message") =>
				within(queue.length ? Promise.resolve(queue.shift()) : new Promise((resolve) => waiters.push(resolve)), 5000, what),
			closed,
		};
	}

	async function opened(ws) {
		if (ws.readyState === 1) return;
		await within(new Promise((resolve, reject) => {
			ws.addEventListener("open", resolve);
			ws.addEventListener("error", () => reject(new Error("websocket error")));
		}), 5000, "raw websocket open");
	}

	function scenario25() {
		const c = ctx.client();
		return [
			[
				"path_query_params",
				async (notes) => {
					const k = K("s25");
					const params = { p: "x" };
					const ws = await c.raw.getOrCreate([k], { params }).webSocket("chat/room?room=1");
					try {
						const box = inbox(ws);
						const hello = JSON.parse(await box.next("hello"));
						notes.hello = hello;
						eq(hello.path, "/websocket/chat/room", "the /websocket prefix is kept (§9.2)");
						eq(hello.query, "room=1", "rvt-* stripped");
						eq(hello.conn?.params, params, "params from the subprotocol");
						const rec = queryPath(k, "/websocket/chat/room")[0];
						assert.ok(rec, "recorded socket");
						eq(new URL(rec.url).searchParams.get("room"), "1");
						eq(rec.offered, ["rivet", "rivet_encoding.bare", `rivet_conn_params.${encodeURIComponent(JSON.stringify(params))}`]);
						eq(rec.protocol, "rivet");
					} finally {
						ws.close();
					}
				},
			],
			[
				"text_and_binary_echo",
				async () => {
					const k = K("s25e");
					const ws = await c.raw.getOrCreate([k]).webSocket("echo");
					try {
						const box = inbox(ws);
						await opened(ws);
						JSON.parse(await box.next("hello"));
						ws.send("hi");
						eq(await box.next("text echo"), "echo:hi");
						ws.send(new Uint8Array([9, 8, 7]));
						const bin = await box.next("binary echo");
						assert.ok(bin instanceof ArrayBuffer, `binary frame arrives as ArrayBuffer, got ${typeof bin}`);
						eq([...new Uint8Array(bin)], [9, 8, 7]);
						const rec = queryPath(k, "/websocket/echo")[0];
						eq(inFrames(rec).map((f) => f.binary), [false, false, true], "text stays text, binary stays binary");
					} finally {
						ws.close();
					}
				},
			],
			[
				"close_codes_propagate",
				async (notes) => {
					const k = K("s25c");
					const h = c.raw.getOrCreate([k]);
					const ws = await h.webSocket("closing");
					const box = inbox(ws);
					await box.next("hello");
					ws.send("close:4001");
					const closed = await within(box.closed, 5000, "server close");
					eq(closed, { code: 4001, reason: "closing as asked" }, "server close code and reason reach the client");
					const ws2 = await h.webSocket("closing2");
					const box2 = inbox(ws2);
					await box2.next("hello");
					ws2.close(4002, "client bye");
					await within(box2.closed, 5000, "client close");
					const log = await waitFor(async () => {
						const entries = await h.wsLog();
						return entries.some((e) => e.event === "client_closed") && entries;
					}, "on_websocket to see the client's close", 3000);
					notes.log = log;
					eq(log.find((e) => e.event === "client_closed").code, 4002, "client close code reaches the handler");
				},
			],
			[
				"direct_handle_websocket",
				async () => {
					const id = await (await c.raw.create([K("s25d")])).resolve();
					const ws = await c.raw.getForId(id).webSocket("/direct?a=b");
					try {
						const hello = JSON.parse(await inbox(ws).next("hello"));
						eq([hello.actorId, hello.path, hello.query], [id, "/websocket/direct", "a=b"]);
						const rec = socketsWhere(`/gateway/${encodeURIComponent(id)}/websocket/direct`)[0];
						assert.ok(rec, "socket to /gateway/{id}/websocket/direct");
					} finally {
						ws.close();
					}
				},
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 26. skipReadyWait forms (§4.4)

	function scenario26() {
		const c = ctx.client();
		const protocolsOf = (rec) => rec.offered;
		return [
			[
				"query_action_and_connect",
				withConns(async (notes, open) => {
					const k = K("s26q");
					const h = c.chat.getOrCreate([k]);
					const who = await h.action({ name: "whoami", args: [], skipReadyWait: true });
					eq(who.key, [k]);
					const ex = onlyExchange(`${base}/gateway/chat/action/whoami`, "POST");
					eq(new URL(ex.url).searchParams.get("rvt-skip-ready-wait"), "true");
					eq(ex.reqHeaders["x-rivet-skip-ready-wait"], "1");
					eq(ex.status, 200);
					const conn = open(h.connect(undefined, { skipReadyWait: true }));
					await within(conn.ready, 5000, "conn.ready");
					eq(conn.actorId, who.actorId);
					const rec = queryPath(k)[0];
					eq(new URL(rec.url).searchParams.get("rvt-skip-ready-wait"), "true");
					assert.ok(protocolsOf(rec).includes("rivet_skip_ready_wait"), `offered ${protocolsOf(rec)}`);
					eq((await conn.whoami()).connId, conn.connId);
				}),
			],
			[
				"direct_action",
				async () => {
					const id = await (await c.chat.create([K("s26a")])).resolve();
					const who = await c.chat.getForId(id).action({ name: "whoami", args: [], skipReadyWait: true });
					eq(who.actorId, id);
					const ex = onlyExchange(`${base}/gateway/${encodeURIComponent(id)}/action/whoami`, "POST");
					eq(ex.reqHeaders["x-rivet-target"], "actor");
					eq(ex.reqHeaders["x-rivet-actor"], id);
					eq(ex.reqHeaders["x-rivet-skip-ready-wait"], "1");
				},
			],
			[
				"direct_connect_header_addressed",
				withConns(
					async (notes, open) => {
						const id = await (await c.chat.create([K("s26c")])).resolve();
						notes.id = id;
						const conn = open(c.chat.getForId(id).connect(undefined, { skipReadyWait: true }));
						await within(conn.ready, 5000, "conn.ready");
						const rec = socketsWhere((url) => new URL(url).pathname === `${base}/connect`).find((r) => r.offered.includes(`rivet_actor.${id}`));
						assert.ok(rec, "socket to {ep}/connect addressed by subprotocols");
						eq(rec.offered, ["rivet", `rivet_encoding.${ENCODING}`, "rivet_target.actor", `rivet_actor.${id}`, "rivet_skip_ready_wait"]);
						eq(rec.protocol, "rivet");
						eq(decodedIn(rec)[0].val.actorId, id);
						eq(conn.actorId, id);
						eq((await conn.whoami()).actorId, id);
					},
					(notes) => recordedSockets.filter((r) => r.offered.includes(`rivet_actor.${notes.id}`)),
				),
			],
			[
				"direct_fetch_header_addressed",
				async () => {
					const id = await (await c.raw.create([K("s26f")])).resolve();
					const res = await c.raw.getForId(id).fetch("/sk?z=1", { skipReadyWait: true });
					const body = await json(res);
					eq([body.actorId, body.path, body.query], [id, "/sk", [["z", "1"]]]);
					const ex = onlyExchange(`${base}/request/sk`, "GET");
					eq(new URL(ex.url).search, "?z=1");
					eq(ex.reqHeaders["x-rivet-target"], "actor");
					eq(ex.reqHeaders["x-rivet-actor"], id);
					eq(ex.reqHeaders["x-rivet-skip-ready-wait"], "1");
				},
			],
			[
				"direct_websocket_header_addressed",
				async () => {
					const id = await (await c.raw.create([K("s26w")])).resolve();
					const ws = await c.raw.getForId(id).webSocket("skws?a=1", undefined, { skipReadyWait: true });
					try {
						const hello = JSON.parse(await inbox(ws).next("hello"));
						eq([hello.actorId, hello.path, hello.query], [id, "/websocket/skws", "a=1"]);
						const rec = recordedSockets.find((r) => r.offered.includes(`rivet_actor.${id}`));
						eq(new URL(rec.url).pathname, `${base}/websocket/skws`);
						eq(rec.offered, ["rivet", "rivet_encoding.bare", "rivet_target.actor", `rivet_actor.${id}`, "rivet_skip_ready_wait"]);
					} finally {
						ws.close();
					}
				},
			],
			[
				"query_fetch_and_websocket",
				async () => {
					const k = K("s26r");
					const h = c.raw.getOrCreate([k]);
					const body = await json(await h.fetch("/q", { skipReadyWait: true }));
					eq(body.path, "/q");
					const ex = onlyExchange(`${base}/gateway/raw/request/q`, "GET");
					eq(new URL(ex.url).searchParams.get("rvt-skip-ready-wait"), "true");
					const ws = await h.webSocket("qws", undefined, { skipReadyWait: true });
					try {
						const hello = JSON.parse(await inbox(ws).next("hello"));
						eq([hello.actorId, hello.path, hello.query], [body.actorId, "/websocket/qws", ""]);
						const rec = queryPath(k, "/websocket/qws")[0];
						eq(new URL(rec.url).searchParams.get("rvt-skip-ready-wait"), "true");
						assert.ok(rec.offered.includes("rivet_skip_ready_wait"));
					} finally {
						ws.close();
					}
				},
			],
		];
	}

	// -----------------------------------------------------------------------------------------
	// 29. The actor router's own routes (§5)

	function scenario29() {
		const c = ctx.client();
		const state = {};
		const actorId = async () => (state.id ??= await (await c.chat.create([K("s29")])).resolve());
		const gwUrl = async (path) => `${EP}/gateway/${encodeURIComponent(await actorId())}${path}`;
		return [
			[
				"actor_health",
				async (notes) => {
					const res = await rawRequest(await gwUrl("/health"), { method: "GET" });
					notes.res = describeRaw(res);
					eq(res.status, 200);
					assert.match(res.headers["content-type"] ?? "", /^text\/plain/);
					eq(Buffer.from(res.body).toString(), "ok");
				},
			],
			[
				"actor_metadata",
				async (notes) => {
					const res = await rawRequest(await gwUrl("/metadata"), { method: "GET" });
					notes.res = describeRaw(res);
					eq(res.status, 200);
					assert.match(res.headers["content-type"] ?? "", /application\/json/);
					const body = JSON.parse(Buffer.from(res.body).toString());
					eq(body.runtime, "rivetkit");
					assert.ok(typeof body.version === "string" && body.version.length > 0, "version");
				},
			],
			[
				"actor_root",
				async (notes) => {
					const texts = [];
					for (const url of [await gwUrl(""), await gwUrl("/"), `${EP}/gateway/chat?rvt-namespace=default&rvt-method=get&rvt-key=${K("s29")}`]) {
						const res = await rawRequest(url, { method: "GET" });
						eq(res.status, 200, `GET ${url}: ${JSON.stringify(describeRaw(res))}`);
						assert.match(res.headers["content-type"] ?? "", /^text\/plain/);
						texts.push(Buffer.from(res.body).toString());
					}
					notes.text = texts[0];
					assert.ok(texts[0].length > 0);
					eq(new Set(texts).size, 1, "same answer for direct, trailing slash and query forms");
				},
			],
			[
				"unknown_route_envelope",
				async (notes) => {
					for (const method of ["GET", "POST"]) {
						const res = await rawRequest(await gwUrl("/nope"), {
							method,
							headers: { "x-rivet-encoding": ENCODING, ...(method === "POST" ? { "content-type": "application/octet-stream" } : {}) },
							...(method === "POST" ? { body: Buffer.from([1]) } : {}),
						});
						notes[method] = describeRaw(res);
						eq(res.status, 404, `${method} /nope`);
						const err = decodeErrorBody(ENCODING, res);
						eq([err.group, err.code], ["actor", "not_found"], `${method} /nope envelope`);
						eq(err.metadata, { resource: "route", id: "/nope" }, "metadata of an unknown route (§2.4)");
					}
				},
			],
			[
				"top_level_routes",
				async (notes) => {
					const meta = await rawRequest(`${EP}/metadata`, { method: "GET" });
					eq(meta.status, 200);
					assert.match(meta.headers["content-type"] ?? "", /application\/json/);
					const root = await rawRequest(`${EP}/`, { method: "GET" });
					eq(root.status, 200);
					notes.root = Buffer.from(root.body).toString().slice(0, 80);
				},
			],
		];
	}

	return {
		13: ["connect(): subprotocol, Init, ready", scenario13],
		14: ["events and subscriptions", scenario14],
		15: ["actions over the socket: typed ids, concurrency", scenario15],
		16: ["action errors over the socket", scenario16],
		17: ["connection rejected", scenario17],
		18: ["connect to a missing actor", scenario18],
		19: ["server-initiated disconnect and reconnect", scenario19],
		21: ["dispose()", scenario21],
		22: ["oversized frame", scenario22],
		23: ["getParams on every connect", scenario23],
		24: ["raw HTTP (onRequest)", scenario24],
		25: ["raw WebSocket (onWebSocket)", scenario25],
		26: ["skipReadyWait forms", scenario26],
		29: ["actor router routes", scenario29],
	};
}
