// Scenario 27 of client-protocol.md §15: queue sends (`handle.send`, `conn.send`) driven by the
// official client against the `worker` actor of app.py, whose `run` loop consumes and completes
// the `jobs` queue and never reads `ignored`.
//
// Besides the values the client returns, every check decodes the HTTP exchange the client made
// (`POST …/queue/{name}`) with this suite's own codec, so a wrong wire shape (e.g. a BARE
// `timeout` that is not a u64) fails here even if the client happened to tolerate it.

import { performance } from "node:perf_hooks";
import { ActorError } from "rivetkit/client";
import {
	assert,
	assertErrorCode,
	cborDecode,
	exchangeBodies,
	exchangesFor,
	hex,
	onlyExchange,
	readBareData,
	rejects,
} from "./lib.mjs";
import { within, waitFor } from "./wslib.mjs";

// app.py WORKER_MAX_MESSAGE_SIZE
const WORKER_MAX_MESSAGE_SIZE = 1024;

/** BARE `optional<T>` tag at `pos`: [present, newPos]. */
function readOptionTag(bytes, pos) {
	const tag = bytes[pos];
	assert.ok(tag === 0 || tag === 1, `BARE optional tag ${tag} at offset ${pos}`);
	return [tag === 1, pos + 1];
}

function readBareStr(bytes, pos) {
	const [data, next] = readBareData(bytes, pos);
	return [new TextDecoder("utf-8", { fatal: true }).decode(data), next];
}

/**
 * Decode an `HttpQueueSendRequest` as the server receives it. BARE: `u16 version | body: data
 * (CBOR) | name: optional<str> | wait: optional<bool> | timeout: optional<u64>` (§6.4); the
 * `timeout` is returned as a BigInt together with its raw 8 bytes.
 */
export function decodeQueueRequest(encoding, bytes) {
	if (encoding === "json") return JSON.parse(new TextDecoder().decode(bytes));
	if (encoding === "cbor") return cborDecode(bytes);
	const version = bytes[0] | (bytes[1] << 8);
	const out = { version };
	let pos = 2;
	let body;
	[body, pos] = readBareData(bytes, pos);
	out.body = cborDecode(body);
	let present;
	[present, pos] = readOptionTag(bytes, pos);
	if (present) [out.name, pos] = readBareStr(bytes, pos);
	[present, pos] = readOptionTag(bytes, pos);
	if (present) {
		const flag = bytes[pos++];
		assert.ok(flag === 0 || flag === 1, `BARE bool ${flag}`);
		out.wait = flag === 1;
	}
	[present, pos] = readOptionTag(bytes, pos);
	if (present) {
		assert.ok(pos + 8 <= bytes.length, "BARE timeout: fewer than 8 bytes (not a u64)");
		const raw = bytes.subarray(pos, pos + 8);
		out.timeout = new DataView(raw.buffer, raw.byteOffset, 8).getBigUint64(0, true);
		out.timeoutHex = hex(raw);
		pos += 8;
	}
	assert.equal(pos, bytes.length, `trailing bytes after HttpQueueSendRequest: ${hex(bytes)}`);
	return out;
}

/** Decode an `HttpQueueSendResponse` (BARE: `u16 version | status: str | response: optional<data>`). */
export function decodeQueueResponse(encoding, bytes) {
	if (encoding === "json") return JSON.parse(new TextDecoder().decode(bytes));
	if (encoding === "cbor") return cborDecode(bytes);
	const version = bytes[0] | (bytes[1] << 8);
	assert.equal(version, 4, `BARE response version ${version} (§6.3)`);
	const out = {};
	let pos = 2;
	[out.status, pos] = readBareStr(bytes, pos);
	let present;
	[present, pos] = readOptionTag(bytes, pos);
	if (present) {
		let data;
		[data, pos] = readBareData(bytes, pos);
		out.response = cborDecode(data);
	}
	assert.equal(pos, bytes.length, `trailing bytes after HttpQueueSendResponse: ${hex(bytes)}`);
	return out;
}

/**
 * @param ctx.EP_URL endpoint URL; ctx.ENCODING; ctx.U a token unique to this process;
 *   ctx.client() makes a tracked official client.
 */
export function queueScenarios(ctx) {
	const { EP_URL, ENCODING, U } = ctx;
	const base = EP_URL.pathname.replace(/\/$/, "");
	const queuePath = (name) => `${base}/gateway/worker/queue/${encodeURIComponent(name)}`;
	const eq = (actual, expected, msg) => assert.deepStrictEqual(actual, expected, msg);

	/** The decoded request and response of the check's only send to queue `name`. */
	async function wire(name) {
		const ex = onlyExchange(queuePath(name), "POST");
		const { req, res } = await exchangeBodies(ex);
		assert.ok(req && res, `bodies of ${ex.method} ${ex.url} were not recorded`);
		return { ex, req: decodeQueueRequest(ENCODING, req), res: decodeQueueResponse(ENCODING, res) };
	}

	/** `processed()` of `h` once it holds `count` bodies (the run loop is asynchronous). */
	async function processedAtLeast(h, count) {
		let last;
		await waitFor(
			async () => {
				last = await h.processed();
				return last.length >= count;
			},
			`the run loop to process ${count} message(s)`,
			3000,
		);
		return last;
	}

	function scenario27() {
		const c = ctx.client();
		const key = (tag) => [`s27${tag}-${U}`];
		return [
			[
				"send_resolves_undefined_and_run_loop_consumes",
				async (notes) => {
					const h = c.worker.getOrCreate(key("a"));
					eq(await h.send("jobs", { n: 1 }), undefined, "send() without wait resolves undefined");
					const { ex, req, res } = await wire("jobs");
					notes.request = req;
					eq(ex.status, 200);
					eq(req.name, "jobs");
					eq(req.wait, false, "wait is sent (false)");
					eq(req.body, { n: 1 });
					assert.ok(req.timeout === undefined || req.timeout === null, `no timeout: ${req.timeout}`);
					eq(res, { status: "completed" }, "a send without wait still answers completed (§14.17)");
					eq(await h.send("jobs", { n: 2 }), undefined);
					eq(await processedAtLeast(h, 2), [{ n: 1 }, { n: 2 }], "consumed by the run loop, in order");
				},
			],
			[
				"wait_completed_with_response",
				async (notes) => {
					const h = c.worker.getOrCreate(key("b"));
					const result = await h.send("jobs", { amount: 3 }, { wait: true, timeout: 5000 });
					notes.result = result;
					eq(result?.status, "completed");
					eq(result.response?.value, 30, "response given to message.complete()");
					assert.ok(Number.isInteger(result.response.id), `message id ${result.response.id}`);
					const { req, res } = await wire("jobs");
					notes.request = req;
					eq(req.wait, true);
					if (ENCODING === "bare") {
						eq(req.timeout, 5000n, "BARE timeout is a u64 of milliseconds");
						eq(req.timeoutHex, "8813000000000000");
					} else {
						eq(req.timeout, 5000, "timeout in milliseconds");
					}
					eq(res.status, "completed");
					eq(res.response, result.response);
					eq(await h.processed(), [{ amount: 3 }]);
				},
			],
			[
				"wait_completed_without_response",
				async (notes) => {
					// message.complete() with no response: the answer has no `response` field.
					const h = c.worker.getOrCreate(key("b2"));
					const result = await h.send("jobs", { n: 5 }, { wait: true });
					notes.result = result;
					eq(result, { status: "completed" });
					const { req, res } = await wire("jobs");
					notes.request = req;
					assert.ok(req.timeout === undefined || req.timeout === null, `no timeout: ${req.timeout}`);
					eq(res, { status: "completed" }, "no response field");
				},
			],
			[
				"wait_timed_out",
				async (notes) => {
					const h = c.worker.getOrCreate(key("c"));
					const t0 = performance.now();
					const result = await h.send("ignored", { x: 1 }, { wait: true, timeout: 300 });
					const ms = Math.round(performance.now() - t0);
					notes.ms = ms;
					eq(result, { status: "timedOut" });
					assert.ok(ms >= 280, `answered after ${ms} ms, before the 300 ms timeout`);
					assert.ok(ms < 2500, `answered after ${ms} ms, long after the 300 ms timeout`);
					const { req, res } = await wire("ignored");
					notes.request = req;
					if (ENCODING === "bare") {
						eq(req.timeout, 300n, "BARE timeout is a u64 of milliseconds");
						eq(req.timeoutHex, "2c01000000000000", "u64 little-endian, 8 bytes");
					} else {
						eq(req.timeout, 300);
					}
					eq(res, { status: "timedOut" }, "no response field when timed out");
					eq(await h.processed(), [], "the run loop never reads `ignored`");
				},
			],
			[
				"conn_send_with_params",
				async (notes) => {
					const h = c.worker.getOrCreate(key("d"));
					const params = { who: `alice-${U}`, n: 7 };
					const conn = h.connect(params);
					try {
						await within(conn.ready, 5000, "conn.ready");
						eq(await conn.send("jobs", { n: 1 }), undefined, "conn.send() without wait");
						const result = await conn.send("jobs", { amount: 4 }, { wait: true, timeout: 5000 });
						notes.result = result;
						eq(result?.status, "completed");
						eq(result.response?.value, 40);
						const sends = exchangesFor(queuePath("jobs"), "POST");
						eq(sends.length, 2, "conn.send() goes over HTTP, one POST per send");
						for (const ex of sends) {
							eq(ex.reqHeaders["x-rivet-conn-params"], JSON.stringify(params), "conn params header");
						}
						eq(await h.publishParams(), [params, params], "can_publish saw the conn params");
						eq(await processedAtLeast(h, 2), [{ n: 1 }, { amount: 4 }]);
					} finally {
						await within(conn.dispose(), 3000, "dispose").catch(() => {});
					}
				},
			],
			[
				"can_publish_refuses",
				async (notes) => {
					const h = c.worker.getOrCreate(key("e"));
					const denied = { deny: true };
					const conn = h.connect(denied);
					try {
						// The connection itself is allowed (no onBeforeConnect); only publishing is not.
						await within(conn.ready, 5000, "conn.ready");
						const err = await rejects(conn.send("jobs", { n: 1 }), "conn.send refused by can_publish");
						assert.ok(err instanceof ActorError, `expected ActorError, got ${err?.name}`);
						assertErrorCode(err, "auth", "forbidden");
						notes.connStatus = onlyExchange(queuePath("jobs"), "POST").status;
					} finally {
						await within(conn.dispose(), 3000, "dispose").catch(() => {});
					}
					const viaHandle = c.worker.getOrCreate(key("e"), { params: denied });
					const err = await rejects(
						viaHandle.send("jobs", { n: 2 }, { wait: true, timeout: 1000 }),
						"handle.send refused by can_publish",
					);
					assertErrorCode(err, "auth", "forbidden");
					eq(await h.publishParams(), [denied, denied], "can_publish saw the refused params");
					eq(await h.processed(), [], "a refused message is never stored");
				},
			],
			[
				"unknown_queue_not_declared",
				async (notes) => {
					const h = c.worker.getOrCreate(key("f"));
					const err = await rejects(h.send("nope", { n: 1 }), "send to an undeclared queue");
					assert.ok(err instanceof ActorError, `expected ActorError, got ${err?.name}`);
					assertErrorCode(err, "queue", "not_declared");
					notes.message = err.message;
					notes.metadata = err.metadata;
					eq(onlyExchange(queuePath("nope"), "POST").status, 400);
				},
			],
			[
				"oversized_body_message_too_large",
				async (notes) => {
					const h = c.worker.getOrCreate(key("g"));
					const big = { n: 1, pad: "x".repeat(WORKER_MAX_MESSAGE_SIZE) };
					const err = await rejects(h.send("jobs", big), "oversized send");
					assert.ok(err instanceof ActorError, `expected ActorError, got ${err?.name}`);
					assertErrorCode(err, "queue", "message_too_large");
					notes.message = err.message;
					notes.metadata = err.metadata;
					eq(err.metadata?.limit, WORKER_MAX_MESSAGE_SIZE, "metadata.limit");
					assert.ok(err.metadata?.size > WORKER_MAX_MESSAGE_SIZE, `metadata.size ${err.metadata?.size}`);
					eq(onlyExchange(queuePath("jobs"), "POST").status, 400);
					// Nothing was stored: the next message is the first the run loop sees.
					const ok = await h.send("jobs", { amount: 1 }, { wait: true, timeout: 5000 });
					eq(ok?.status, "completed");
					eq(await h.processed(), [{ amount: 1 }]);
				},
			],
		];
	}

	return {
		27: ["queues: handle.send, conn.send, wait/timeout, errors", scenario27],
	};
}
