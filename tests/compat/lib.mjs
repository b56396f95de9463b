// Shared plumbing for the compat scripts: result lines, a recording fetch, a check runner,
// assertion helpers, a raw HTTP helper and a small independent CBOR/BARE codec.
//
// Result lines go to stdout prefixed with MARKER so the pytest side can ignore the client's own
// log lines. Every check records the HTTP exchanges the official client made while it ran (through
// a wrapper around globalThis.fetch, which the client looks up at call time) and prints them when
// the check fails: what the client sent and what the server answered.

import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import http from "node:http";
import { performance } from "node:perf_hooks";

export const MARKER = "@@compat ";

export function emit(obj) {
	process.stdout.write(`${MARKER}${JSON.stringify(obj, jsonReplacer)}\n`);
}

function jsonReplacer(_key, value) {
	if (typeof value === "bigint") return `${value}n`;
	if (value instanceof Uint8Array) return `<${value.constructor.name} ${hex(value, 64)}>`;
	return value;
}

export function hex(bytes, max = 512) {
	const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
	const shown = Buffer.from(b.subarray(0, max)).toString("hex");
	return b.length > max ? `${shown}… (${b.length} bytes)` : shown;
}

// ---------------------------------------------------------------------------------------------
// Recording fetch

const als = new AsyncLocalStorage();
export const allExchanges = [];
const realFetch = globalThis.fetch;
let seq = 0;

function bodyToBytes(body) {
	if (body === undefined || body === null) return Promise.resolve(null);
	if (typeof body === "string") return Promise.resolve(new TextEncoder().encode(body));
	if (body instanceof Uint8Array) return Promise.resolve(body);
	if (body instanceof ArrayBuffer) return Promise.resolve(new Uint8Array(body));
	return new Response(body).arrayBuffer().then((b) => new Uint8Array(b));
}

globalThis.fetch = async function recordingFetch(input, init) {
	const ex = {
		seq: ++seq,
		t0: performance.now(),
		tEnd: null,
		method: "GET",
		url: "",
		reqHeaders: {},
		status: null,
		resHeaders: null,
		error: null,
		_reqBody: Promise.resolve(null),
		_resBody: Promise.resolve(null),
	};
	let callInit = init;
	if (input instanceof Request && init === undefined) {
		ex.method = input.method;
		ex.url = input.url;
		ex.reqHeaders = Object.fromEntries(input.headers);
		if (input.body) ex._reqBody = input.clone().arrayBuffer().then((b) => new Uint8Array(b));
	} else {
		ex.url = String(input instanceof Request ? input.url : input);
		ex.method = (init?.method ?? (input instanceof Request ? input.method : "GET")).toUpperCase();
		ex.reqHeaders = Object.fromEntries(new Headers(init?.headers ?? {}));
		const body = init?.body;
		if (body instanceof ReadableStream) {
			// Tee the stream: one branch goes out (still streamed, still chunked), one is recorded.
			const [out, copy] = body.tee();
			callInit = { ...init, body: out };
			ex._reqBody = bodyToBytes(copy);
		} else {
			ex._reqBody = bodyToBytes(body);
		}
	}
	allExchanges.push(ex);
	als.getStore()?.exchanges.push(ex);
	try {
		const res = await realFetch(input, callInit);
		ex.status = res.status;
		ex.resHeaders = Object.fromEntries(res.headers);
		ex._resBody = res
			.clone()
			.arrayBuffer()
			.then((b) => new Uint8Array(b));
		ex.tEnd = performance.now();
		return res;
	} catch (err) {
		ex.error = String(err?.cause ?? err);
		ex.tEnd = performance.now();
		throw err;
	}
};

async function settle(promise, ms = 2000) {
	let timer;
	const timeout = new Promise((resolve) => {
		timer = setTimeout(() => resolve("<body not available>"), ms);
	});
	try {
		return await Promise.race([promise.catch((e) => `<body error: ${e}>`), timeout]);
	} finally {
		clearTimeout(timer);
	}
}

/** Request/response bodies of an exchange as bytes (awaits the recorded copies). */
export async function exchangeBodies(ex) {
	const req = await settle(ex._reqBody);
	const res = await settle(ex._resBody);
	return { req: req instanceof Uint8Array ? req : null, res: res instanceof Uint8Array ? res : null };
}

/** Parse the JSON body of a response; throws with the raw text when it is not JSON. */
export async function resJson(ex) {
	const { res } = await exchangeBodies(ex);
	assert.ok(res, `no response body recorded for ${ex.method} ${ex.url}`);
	const text = new TextDecoder().decode(res);
	try {
		return JSON.parse(text);
	} catch {
		assert.fail(`response of ${ex.method} ${ex.url} is not JSON: ${text.slice(0, 300)}`);
	}
}

export async function reqJson(ex) {
	const { req } = await exchangeBodies(ex);
	assert.ok(req, `no request body recorded for ${ex.method} ${ex.url}`);
	return JSON.parse(new TextDecoder().decode(req));
}

function renderBody(bytes, contentType) {
	if (!(bytes instanceof Uint8Array)) return bytes;
	if (bytes.length === 0) return "";
	const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
	const printable = /^[\x09\x0a\x0d\x20-\x7e\u00a0-\uffff]*$/.test(text) && !text.includes("\ufffd");
	if ((contentType ?? "").includes("json") || printable) {
		return text.length > 1500 ? `${text.slice(0, 1500)}… (${bytes.length} bytes)` : text;
	}
	return `hex:${hex(bytes, 400)}`;
}

const INTERESTING_HEADERS = /^(content-type|content-length|transfer-encoding|authorization|x-rivet-.*|sec-websocket-protocol)$/;

function pickHeaders(headers) {
	if (!headers) return headers;
	return Object.fromEntries(Object.entries(headers).filter(([k]) => INTERESTING_HEADERS.test(k)));
}

export async function describeExchanges(exchanges, max = 8) {
	const shown = exchanges.length > max ? [...exchanges.slice(0, 3), ...exchanges.slice(-(max - 3))] : exchanges;
	const out = [];
	for (const ex of shown) {
		const { req, res } = await exchangeBodies(ex);
		out.push({
			seq: ex.seq,
			request: `${ex.method} ${ex.url}`,
			reqHeaders: pickHeaders(ex.reqHeaders),
			reqBody: renderBody(req, ex.reqHeaders["content-type"]),
			status: ex.status,
			resHeaders: pickHeaders(ex.resHeaders),
			resBody: renderBody(res, ex.resHeaders?.["content-type"]),
			error: ex.error ?? undefined,
		});
	}
	if (exchanges.length > max) out.push({ note: `${exchanges.length - max} exchanges omitted` });
	return out;
}

/** Exchanges of the running check. */
export function currentExchanges() {
	return als.getStore()?.exchanges ?? [];
}

/** Exchanges of the running check whose URL path (without query) matches `pathname`. */
export function exchangesFor(pathname, method) {
	return currentExchanges().filter((ex) => {
		const url = new URL(ex.url);
		return url.pathname === pathname && (method === undefined || ex.method === method);
	});
}

/** The single exchange of the running check for `pathname`; fails unless exactly one exists. */
export function onlyExchange(pathname, method) {
	const found = exchangesFor(pathname, method);
	assert.equal(
		found.length,
		1,
		`expected exactly one ${method ?? ""} request to ${pathname}, saw ${found.length}: ${currentExchanges()
			.map((e) => `${e.method} ${e.url}`)
			.join(" | ")}`,
	);
	return found[0];
}

// ---------------------------------------------------------------------------------------------
// Check runner

export function describeError(err) {
	if (err === null || typeof err !== "object") return { value: String(err) };
	const out = { name: err.name, message: String(err.message ?? err) };
	for (const field of ["group", "code", "metadata", "actor", "statusCode"]) {
		if (err[field] !== undefined) out[field] = err[field];
	}
	if (err.name === "AssertionError" && err.generatedMessage === false) {
		// The message already says it; keep the stack short.
	}
	if (err.stack) out.stack = err.stack.split("\n").slice(1, 6).join("\n");
	if (err.cause) out.cause = String(err.cause);
	return out;
}

function withTimeout(promise, ms, what) {
	let timer;
	const timeout = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
	});
	return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Run the checks of one scenario in order. Each check is `[name, async (notes) => {...}]`; it
 * passes unless it throws. Emits one `check` line per check and a closing `scenario_end` line.
 */
export async function runScenario({ encoding, scenario, title, checks, checkTimeoutMs }) {
	emit({ type: "scenario_start", encoding, scenario, title, checks: checks.map(([n]) => n) });
	let passed = 0;
	let failed = 0;
	for (const [name, fn] of checks) {
		const ctx = { exchanges: [] };
		const notes = {};
		const t0 = performance.now();
		let error = null;
		try {
			await als.run(ctx, () => withTimeout(Promise.resolve().then(() => fn(notes)), checkTimeoutMs, name));
		} catch (err) {
			error = describeError(err);
		}
		const line = {
			type: "check",
			encoding,
			scenario,
			check: name,
			ok: error === null,
			ms: Math.round(performance.now() - t0),
		};
		if (Object.keys(notes).length > 0) line.notes = notes;
		if (error !== null) {
			line.error = error;
			line.exchanges = await describeExchanges(ctx.exchanges);
			failed++;
		} else {
			passed++;
		}
		emit(line);
	}
	emit({ type: "scenario_end", encoding, scenario, passed, failed });
	return { passed, failed };
}

// ---------------------------------------------------------------------------------------------
// Assertions

export { assert };

/** Await `promise`, which must reject; returns the rejection reason. */
export async function rejects(promise, what = "call") {
	let value;
	try {
		value = await promise;
	} catch (err) {
		return err;
	}
	assert.fail(`${what} was expected to fail but returned ${JSON.stringify(value, jsonReplacer)}`);
}

/** Assert an error carries `group`/`code` (the client's ActorError shape). */
export function assertErrorCode(err, group, code) {
	const got = `${err?.group}.${err?.code}`;
	assert.equal(got, `${group}.${code}`, `expected error ${group}.${code}, got ${got} (${err?.name}: ${err?.message})`);
}

// Codes the client retries (client-protocol §2.3); a "fast, non-retryable" error must not be one.
export function isRetryableCode(group, code) {
	if (group === "actor") {
		return (
			["not_found", "starting", "stopping", "not_configured", "dropped_reply", "destroying", "restarting"].includes(
				code,
			) || String(code).startsWith("destroyed_")
		);
	}
	if (group === "guard") {
		return [
			"actor_ready_timeout",
			"actor_runner_failed",
			"service_unavailable",
			"actor_wake_retries_exceeded",
			"actor_stopped_while_waiting",
			"tunnel_request_aborted",
			"tunnel_message_timeout",
			"tunnel_response_closed",
			"gateway_response_start_timeout",
		].includes(code);
	}
	return false;
}

/** Bytes equal and a Uint8Array (Buffer accepted, reported in notes by callers). */
export function assertBytes(actual, expected, label = "value") {
	assert.ok(actual instanceof Uint8Array, `${label}: expected a Uint8Array, got ${describeType(actual)}`);
	assert.equal(hex(actual, 1 << 20), hex(expected, 1 << 20), `${label}: bytes differ`);
}

export function describeType(v) {
	if (v === null) return "null";
	if (typeof v === "object") return v.constructor?.name ?? "object";
	return typeof v;
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP (for hand-made requests: chunked bodies, missing headers, BARE versions)

/**
 * Send one request with node:http. `chunks` (array of strings/bytes) are written separately,
 * `delayMs` apart, without Content-Length, so the body goes out with Transfer-Encoding: chunked;
 * `body` is sent whole with Content-Length.
 */
export function rawRequest(url, { method = "POST", headers = {}, body, chunks, delayMs = 0, timeoutMs = 10_000 } = {}) {
	return new Promise((resolve, reject) => {
		const target = new URL(url);
		const finalHeaders = { ...headers };
		if (body !== undefined) finalHeaders["content-length"] = String(Buffer.byteLength(body));
		const req = http.request(
			{ method, hostname: target.hostname, port: target.port, path: target.pathname + target.search, headers: finalHeaders },
			(res) => {
				const parts = [];
				res.on("data", (d) => parts.push(d));
				res.on("end", () =>
					resolve({ status: res.statusCode, headers: res.headers, body: new Uint8Array(Buffer.concat(parts)) }),
				);
				res.on("error", reject);
			},
		);
		req.setTimeout(timeoutMs, () => req.destroy(new Error(`raw request to ${url} timed out`)));
		req.on("error", reject);
		(async () => {
			if (chunks) {
				for (let i = 0; i < chunks.length; i++) {
					if (i > 0 && delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
					req.write(chunks[i]);
				}
			} else if (body !== undefined) {
				req.write(body);
			}
			req.end();
		})().catch(reject);
	});
}

export function describeRaw(res) {
	return {
		status: res.status,
		contentType: res.headers["content-type"],
		body: renderBody(res.body, res.headers["content-type"]),
	};
}

// ---------------------------------------------------------------------------------------------
// A small independent CBOR codec (RFC 8949 subset) and BARE helpers, for hand-built bodies.

export function cborEncode(value) {
	const out = [];
	const head = (major, n) => {
		const m = major << 5;
		if (typeof n === "bigint") {
			out.push(m | 27);
			for (let i = 7; i >= 0; i--) out.push(Number((n >> BigInt(i * 8)) & 0xffn));
		} else if (n < 24) out.push(m | n);
		else if (n < 0x100) out.push(m | 24, n);
		else if (n < 0x10000) out.push(m | 25, n >> 8, n & 0xff);
		else if (n < 0x100000000) out.push(m | 26, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
		else head(major, BigInt(n));
	};
	const enc = (v) => {
		if (v === null) out.push(0xf6);
		else if (v === undefined) out.push(0xf7);
		else if (v === true) out.push(0xf5);
		else if (v === false) out.push(0xf4);
		else if (typeof v === "bigint") v >= 0n ? head(0, v) : head(1, -1n - v);
		else if (typeof v === "number") {
			if (Number.isSafeInteger(v)) v >= 0 ? head(0, v) : head(1, -1 - v);
			else {
				const buf = Buffer.alloc(8);
				buf.writeDoubleBE(v);
				out.push(0xfb, ...buf);
			}
		} else if (typeof v === "string") {
			const b = Buffer.from(v, "utf8");
			head(3, b.length);
			out.push(...b);
		} else if (v instanceof Uint8Array) {
			head(2, v.length);
			out.push(...v);
		} else if (Array.isArray(v)) {
			head(4, v.length);
			v.forEach(enc);
		} else if (typeof v === "object") {
			const entries = Object.entries(v);
			head(5, entries.length);
			for (const [k, x] of entries) {
				enc(k);
				enc(x);
			}
		} else throw new TypeError(`cannot CBOR-encode ${typeof v}`);
	};
	enc(value);
	return new Uint8Array(out);
}

/**
 * Decode one CBOR item; throws on trailing bytes. Tag 64 → Uint8Array, other tags → {tag, value}.
 * With `{bigintFor64: true}` every integer in the 8-byte form (additional info 27) is a BigInt,
 * as cbor-x decodes it; otherwise only those beyond Number.MAX_SAFE_INTEGER are.
 */
export function cborDecode(bytes, { bigintFor64 = false } = {}) {
	const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
	const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
	let pos = 0;
	const need = (n) => {
		if (pos + n > b.length) throw new Error(`CBOR: truncated at ${pos}`);
	};
	const arg = (info) => {
		if (info < 24) return info;
		if (info === 24) return need(1), b[pos++];
		if (info === 25) return need(2), (pos += 2), view.getUint16(pos - 2);
		if (info === 26) return need(4), (pos += 4), view.getUint32(pos - 4);
		if (info === 27) {
			need(8);
			const big = view.getBigUint64(pos);
			pos += 8;
			return !bigintFor64 && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
		}
		if (info === 31) return -1;
		throw new Error(`CBOR: bad additional info ${info}`);
	};
	const item = () => {
		need(1);
		const ib = b[pos++];
		const major = ib >> 5;
		const info = ib & 31;
		if (major === 7) {
			if (info === 20) return false;
			if (info === 21) return true;
			if (info === 22) return null;
			if (info === 23) return undefined;
			if (info === 25) {
				need(2);
				const h = view.getUint16(pos);
				pos += 2;
				const exp = (h >> 10) & 0x1f;
				const mant = h & 0x3ff;
				const sign = h & 0x8000 ? -1 : 1;
				if (exp === 0) return sign * 2 ** -14 * (mant / 1024);
				if (exp === 31) return mant ? NaN : sign * Infinity;
				return sign * 2 ** (exp - 15) * (1 + mant / 1024);
			}
			if (info === 26) return need(4), (pos += 4), view.getFloat32(pos - 4);
			if (info === 27) return need(8), (pos += 8), view.getFloat64(pos - 8);
			throw new Error(`CBOR: unsupported simple ${info}`);
		}
		const n = arg(info);
		switch (major) {
			case 0:
				return n;
			case 1:
				return typeof n === "bigint" ? -1n - n : -1 - n;
			case 2:
			case 3: {
				let data;
				if (n === -1) {
					const parts = [];
					while (b[pos] !== 0xff) parts.push(item());
					pos++;
					return major === 3 ? parts.join("") : new Uint8Array(Buffer.concat(parts));
				}
				need(n);
				data = b.subarray(pos, pos + n);
				pos += n;
				return major === 3 ? new TextDecoder("utf-8", { fatal: true }).decode(data) : new Uint8Array(data);
			}
			case 4: {
				const arr = [];
				if (n === -1) {
					while (b[pos] !== 0xff) arr.push(item());
					pos++;
				} else for (let i = 0; i < n; i++) arr.push(item());
				return arr;
			}
			case 5: {
				const obj = {};
				const count = n;
				for (let i = 0; count === -1 ? b[pos] !== 0xff : i < count; i++) {
					const k = item();
					obj[String(k)] = item();
				}
				if (count === -1) pos++;
				return obj;
			}
			case 6: {
				const value = item();
				if (n === 64 && value instanceof Uint8Array) return value;
				return { tag: n, value };
			}
		}
		throw new Error(`CBOR: bad major type ${major}`);
	};
	const value = item();
	if (pos !== b.length) throw new Error(`CBOR: ${b.length - pos} trailing bytes`);
	return value;
}

export function uvarint(n) {
	const out = [];
	do {
		let byte = n & 0x7f;
		n = Math.floor(n / 128);
		if (n > 0) byte |= 0x80;
		out.push(byte);
	} while (n > 0);
	return out;
}

/** BARE `data` field: uvarint length + bytes. */
export function bareData(bytes) {
	return [...uvarint(bytes.length), ...bytes];
}

/** Read a BARE `data` at `pos`: returns [bytes, newPos]. */
export function readBareData(bytes, pos) {
	let len = 0;
	let shift = 0;
	for (;;) {
		if (pos >= bytes.length) throw new Error("BARE: truncated varint");
		const byte = bytes[pos++];
		len += (byte & 0x7f) * 2 ** shift;
		if (!(byte & 0x80)) break;
		shift += 7;
	}
	if (pos + len > bytes.length) throw new Error("BARE: truncated data");
	return [bytes.subarray(pos, pos + len), pos + len];
}

/** Read a BARE `uint` at `pos`: returns [value, newPos]. */
export function readUvarint(bytes, pos) {
	let value = 0;
	let shift = 0;
	for (;;) {
		if (pos >= bytes.length) throw new Error("BARE: truncated varint");
		const byte = bytes[pos++];
		value += (byte & 0x7f) * 2 ** shift;
		if (!(byte & 0x80)) return [value, pos];
		shift += 7;
	}
}

/**
 * Decode an HTTP error body as the client would (§2.1/§2.3): JSON when the content type says so,
 * else in the request encoding (BARE: v1-v4 `HttpResponseError`). Throws when it cannot.
 */
export function decodeErrorBody(encoding, res) {
	const contentType = res.headers["content-type"] ?? "";
	const pick = (o) => ({ group: o.group, code: o.code, message: o.message, metadata: o.metadata, actor: o.actor });
	if (contentType.includes("application/json") || encoding === "json") {
		return pick(JSON.parse(new TextDecoder().decode(res.body)));
	}
	if (encoding === "cbor") return pick(cborDecode(res.body));
	const b = res.body;
	const version = b[0] | (b[1] << 8);
	if (version < 1 || version > 4) throw new Error(`BARE error with version ${version}`);
	const str = (pos) => {
		const [data, next] = readBareData(b, pos);
		return [new TextDecoder("utf-8", { fatal: true }).decode(data), next];
	};
	let pos = 2;
	const out = {};
	[out.group, pos] = str(pos);
	[out.code, pos] = str(pos);
	[out.message, pos] = str(pos);
	if (b[pos++] === 1) {
		let meta;
		[meta, pos] = readBareData(b, pos);
		out.metadata = cborDecode(meta);
	}
	if (version >= 4 && b[pos++] === 1) {
		const actor = {};
		[actor.actorId, pos] = str(pos);
		[actor.generation, pos] = readUvarint(b, pos);
		if (b[pos++] === 1) [actor.key, pos] = str(pos);
		out.actor = actor;
	}
	if (pos !== b.length) throw new Error(`BARE error: ${b.length - pos} trailing bytes`);
	return out;
}

export function concatBytes(...parts) {
	return new Uint8Array(Buffer.concat(parts.map((p) => Buffer.from(p))));
}

export function base64UrlDecode(s) {
	return new Uint8Array(Buffer.from(s.replace(/-/g, "+").replace(/_/g, "/"), "base64"));
}
