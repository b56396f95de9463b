// WebSocket plumbing for the connection scenarios: a recording WebSocket the official client
// uses without knowing it, an independent decoder/encoder for the frames of client-protocol §6.4
// (json, cbor, bare v4) and small waiting helpers.
//
// The client looks up `globalThis.WebSocket` when it opens its first socket and falls back to the
// `ws` package only when that is undefined (Node 20). Importing this module installs
// `RecordingWebSocket` (a subclass of `ws`'s WebSocket) there, so every socket the official client
// opens is the real `ws` socket plus a record of the handshake (offered and selected
// subprotocols, upgrade status), every frame in both directions as raw bytes, and the close
// code and reason. The checks assert on those bytes, decoded here without the client's code.

import { performance } from "node:perf_hooks";
import WebSocket from "ws";
import { assert, bareData, cborDecode, cborEncode, hex, readBareData, readUvarint, uvarint } from "./lib.mjs";

/** Every socket opened since start, in order. */
export const recordedSockets = [];
let socketSeq = 0;

function toBytes(data) {
	if (typeof data === "string") return new TextEncoder().encode(data);
	if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0));
	if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
	if (Array.isArray(data)) return new Uint8Array(Buffer.concat(data));
	throw new TypeError(`unexpected frame data ${typeof data}`);
}

export class RecordingWebSocket extends WebSocket {
	constructor(url, protocols, options) {
		super(url, protocols, options);
		const offered = protocols === undefined ? [] : Array.isArray(protocols) ? [...protocols] : [protocols];
		const rec = {
			seq: ++socketSeq,
			url: String(url),
			offered,
			t0: performance.now(),
			upgrade: null,
			protocol: null,
			openedAt: null,
			frames: [],
			closed: null,
			clientClose: null,
			error: null,
			socket: this,
		};
		this.rec = rec;
		recordedSockets.push(rec);
		this.on("upgrade", (res) => {
			rec.upgrade = { status: res.statusCode, protocol: res.headers["sec-websocket-protocol"] ?? null };
		});
		this.on("open", () => {
			rec.protocol = this.protocol;
			rec.openedAt = performance.now();
		});
		this.on("message", (data, isBinary) => {
			rec.frames.push({ dir: "in", binary: isBinary, bytes: toBytes(data), t: performance.now() });
		});
		this.on("close", (code, reason) => {
			rec.closed = { code, reason: Buffer.from(reason).toString("utf8"), t: performance.now() };
		});
		this.on("error", (err) => {
			rec.error = String(err?.message ?? err);
		});
	}

	send(data, ...rest) {
		this.rec.frames.push({ dir: "out", binary: typeof data !== "string", bytes: toBytes(data), t: performance.now() });
		return super.send(data, ...rest);
	}

	close(code, reason) {
		// `ws` calls close() itself to answer a close frame from the server: only calls made
		// before any close frame arrived are the client's own.
		if (!this.rec.clientClose && !this._closeFrameReceived) {
			this.rec.clientClose = { code, reason: reason === undefined ? undefined : Buffer.from(reason).toString("utf8"), t: performance.now() };
		}
		return super.close(code, reason);
	}
}

globalThis.WebSocket = RecordingWebSocket;

/** Recorded sockets whose URL satisfies `pred` (a substring or a function of the URL). */
export function socketsWhere(pred) {
	const test = typeof pred === "function" ? pred : (url) => url.includes(pred);
	return recordedSockets.filter((rec) => test(rec.url));
}

/** A readable summary of a recorded socket, for failure notes. */
export function describeSocket(rec, encoding, maxFrames = 12) {
	if (!rec) return rec;
	const frames = rec.frames.slice(0, maxFrames).map((f) => {
		let decoded;
		try {
			decoded = f.dir === "in" ? decodeToClient(encoding, f) : decodeToServer(encoding, f);
			decoded = JSON.parse(JSON.stringify(decoded, (_k, v) => (typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? `<${hex(v, 48)}>` : v)));
		} catch (err) {
			decoded = `<undecodable: ${err.message}>`;
		}
		return { dir: f.dir, binary: f.binary, len: f.bytes.length, raw: f.binary ? hex(f.bytes, 96) : new TextDecoder().decode(f.bytes.subarray(0, 300)), decoded };
	});
	return {
		seq: rec.seq,
		url: rec.url,
		offered: rec.offered,
		upgrade: rec.upgrade,
		protocol: rec.protocol,
		closed: rec.closed,
		clientClose: rec.clientClose,
		error: rec.error,
		frames,
		moreFrames: rec.frames.length > maxFrames ? rec.frames.length - maxFrames : undefined,
	};
}

// ---------------------------------------------------------------------------------------------
// Frame codec (client-protocol §6.4, §8.3-8.5), independent of the client's.
//
// Decoded messages are `{tag, val, idTyped}` where ids and actionIds are BigInt when the wire
// form is BigInt-typed (JSON ["$BigInt","n"], CBOR major 0 with the 8-byte 1b form, BARE uint)
// and a plain number otherwise; `idTyped` tells whether every id present was BigInt-typed.

function reviveCompat(value) {
	if (Array.isArray(value)) {
		if (value.length === 2 && typeof value[0] === "string" && value[0].startsWith("$")) {
			const [tag, payload] = value;
			if (tag === "$BigInt") return BigInt(payload);
			if (tag === "$Uint8Array") return new Uint8Array(Buffer.from(payload, "base64"));
			if (tag === "$Undefined") return undefined;
			if (tag.startsWith("$$")) return [tag.slice(1), reviveCompat(payload)];
			throw new Error(`unknown compat tag ${tag}`);
		}
		return value.map(reviveCompat);
	}
	if (value !== null && typeof value === "object") {
		return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, reviveCompat(v)]));
	}
	return value;
}

/** CBOR decode where 8-byte (1b) integers come back as BigInt, like cbor-x. */
export function cborDecodeWide(bytes) {
	return cborDecode(bytes, { bigintFor64: true });
}

function jsonId(raw) {
	if (raw === null || raw === undefined) return { value: raw, typed: true };
	if (Array.isArray(raw) && raw[0] === "$BigInt" && typeof raw[1] === "string") return { value: BigInt(raw[1]), typed: true };
	return { value: raw, typed: false };
}

function bareReader(bytes) {
	let pos = 0;
	const r = {
		u8() {
			if (pos >= bytes.length) throw new Error("BARE: truncated");
			return bytes[pos++];
		},
		uint() {
			let value = 0n;
			let shift = 0n;
			for (;;) {
				const byte = r.u8();
				value |= BigInt(byte & 0x7f) << shift;
				if (!(byte & 0x80)) return value;
				shift += 7n;
			}
		},
		data() {
			const [d, next] = readBareData(bytes, pos);
			pos = next;
			return d;
		},
		str() {
			return new TextDecoder("utf-8", { fatal: true }).decode(r.data());
		},
		bool() {
			const b = r.u8();
			if (b > 1) throw new Error(`BARE: bad bool ${b}`);
			return b === 1;
		},
		optional(read) {
			const present = r.u8();
			if (present > 1) throw new Error(`BARE: bad optional flag ${present}`);
			return present ? read() : null;
		},
		end() {
			if (pos !== bytes.length) throw new Error(`BARE: ${bytes.length - pos} trailing bytes`);
		},
	};
	return r;
}

function frameBytes(frame) {
	return frame instanceof Uint8Array ? frame : frame.bytes;
}

/** Decode a server → client frame (`ToClient`). */
export function decodeToClient(encoding, frame) {
	const bytes = frameBytes(frame);
	if (encoding === "json") {
		const msg = JSON.parse(new TextDecoder().decode(bytes));
		const { tag, val } = msg.body;
		const out = { tag, val: { ...val }, idTyped: true };
		if (tag === "ActionResponse") {
			const id = jsonId(val.id);
			out.val.id = id.value;
			out.idTyped = id.typed;
			out.val.output = reviveCompat(val.output);
		} else if (tag === "Error") {
			const id = jsonId(val.actionId);
			out.val.actionId = id.value;
			out.idTyped = id.typed;
			out.val.metadata = reviveCompat(val.metadata);
		} else if (tag === "Event") {
			out.val.args = reviveCompat(val.args);
		}
		return out;
	}
	if (encoding === "cbor") {
		const msg = cborDecodeWide(bytes);
		const { tag, val } = msg.body;
		const out = { tag, val: { ...val }, idTyped: true };
		if (tag === "ActionResponse") out.idTyped = typeof val.id === "bigint";
		if (tag === "Error") out.idTyped = val.actionId === null || val.actionId === undefined || typeof val.actionId === "bigint";
		for (const k of ["output", "args", "metadata"]) if (k in out.val) out.val[k] = reviveCompat(out.val[k]);
		return out;
	}
	const r = bareReader(bytes);
	const version = r.u8() | (r.u8() << 8);
	const tagIndex = Number(r.uint());
	let out;
	if (tagIndex === 0) out = { tag: "Init", val: { actorId: r.str(), connectionId: r.str() } };
	else if (tagIndex === 1) {
		const val = { group: r.str(), code: r.str(), message: r.str() };
		val.metadata = r.optional(() => reviveCompat(cborDecode(r.data())));
		val.actionId = r.optional(() => r.uint());
		val.actor = r.optional(() => ({ actorId: r.str(), generation: Number(r.uint()), key: r.optional(() => r.str()) }));
		out = { tag: "Error", val };
	} else if (tagIndex === 2) out = { tag: "ActionResponse", val: { id: r.uint(), output: reviveCompat(cborDecode(r.data())) } };
	else if (tagIndex === 3) out = { tag: "Event", val: { name: r.str(), args: reviveCompat(cborDecode(r.data())) } };
	else throw new Error(`BARE ToClient: unknown union tag ${tagIndex}`);
	r.end();
	out.version = version;
	out.idTyped = true;
	return out;
}

/** Decode a client → server frame (`ToServer`). */
export function decodeToServer(encoding, frame) {
	const bytes = frameBytes(frame);
	if (encoding === "json") {
		const { tag, val } = JSON.parse(new TextDecoder().decode(bytes)).body;
		if (tag === "ActionRequest") return { tag, val: { ...val, id: jsonId(val.id).value, args: reviveCompat(val.args) } };
		return { tag, val };
	}
	if (encoding === "cbor") {
		const { tag, val } = cborDecodeWide(bytes).body;
		if (tag === "ActionRequest") return { tag, val: { ...val, args: reviveCompat(val.args) } };
		return { tag, val };
	}
	const r = bareReader(bytes);
	const version = r.u8() | (r.u8() << 8);
	const tagIndex = Number(r.uint());
	let out;
	if (tagIndex === 0) out = { tag: "ActionRequest", val: { id: r.uint(), name: r.str(), args: reviveCompat(cborDecode(r.data())) } };
	else if (tagIndex === 1) out = { tag: "SubscriptionRequest", val: { eventName: r.str(), subscribe: r.bool() } };
	else throw new Error(`BARE ToServer: unknown union tag ${tagIndex}`);
	r.end();
	out.version = version;
	return out;
}

/**
 * Encode an `ActionRequest` by hand for a raw socket. `id` is a BigInt (typed form: JSON
 * ["$BigInt"], CBOR 1b) or a number (plain form). `args` must be JSON-safe.
 */
export function encodeActionRequest(encoding, id, name, args) {
	if (encoding === "json") {
		const wireId = typeof id === "bigint" ? ["$BigInt", id.toString()] : id;
		return JSON.stringify({ body: { tag: "ActionRequest", val: { id: wireId, name, args } } });
	}
	if (encoding === "cbor") return cborEncode({ body: { tag: "ActionRequest", val: { id, name, args } } });
	const nameBytes = new TextEncoder().encode(name);
	return new Uint8Array([4, 0, 0, ...bigUvarint(BigInt(id)), ...uvarint(nameBytes.length), ...nameBytes, ...bareData(cborEncode(args))]);
}

function bigUvarint(n) {
	const out = [];
	do {
		let byte = Number(n & 0x7fn);
		n >>= 7n;
		if (n > 0n) byte |= 0x80;
		out.push(byte);
	} while (n > 0n);
	return out;
}

// ---------------------------------------------------------------------------------------------
// Waiting

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `fn` until it returns a truthy value (returned) or `ms` pass (throws `what`). */
export async function waitFor(fn, what, ms = 5000, every = 20) {
	const deadline = performance.now() + ms;
	for (;;) {
		const value = await fn();
		if (value) return value;
		if (performance.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
		await sleep(every);
	}
}

/** Await `promise` but fail after `ms` with `what`. */
export async function within(promise, ms, what) {
	let timer;
	const timeout = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new Error(`${what}: not settled after ${ms} ms`)), ms);
	});
	try {
		return await Promise.race([promise, timeout]);
	} finally {
		clearTimeout(timer);
	}
}

/** Record a conn's status changes and errors from now on. */
export function track(conn) {
	const t = { statuses: [], errors: [] };
	conn.onStatusChange((s) => t.statuses.push(s));
	conn.onError((e) => t.errors.push({ group: e.group, code: e.code, message: e.message, metadata: e.metadata }));
	return t;
}
