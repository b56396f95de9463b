// WebSocket side of the load generator: the client protocol's `/connect` socket (§8 of the spec) with
// JSON frames, on the minimal client in wsraw.mjs (default) or the `ws` npm package (no per-message
// deflate; --ws-client ws). One RivetWs is one connection to one
// actor: it resolves `ready` on the server's Init frame, sends ActionRequests with BigInt-typed ids
// (["$BigInt","N"]) built as strings, matches ActionResponse / Error frames by id and hands Event frames
// to `onEvent`. Frames are parsed with JSON.parse; the rest is kept as small as possible so that the
// load generator costs a few µs per frame.
import WebSocket from "ws";
import { RawWebSocket } from "./wsraw.mjs";

let clientKind = "raw";
/** "raw" (wsraw.mjs) or "ws" (the npm package) for every connection opened afterwards. */
export function setWsClient(kind) {
	if (!["raw", "ws"].includes(kind)) throw new Error(`unknown ws client ${kind}`);
	clientKind = kind;
}

export function connectPath(key) {
	return (
		`/gateway/counter/connect?rvt-namespace=default&rvt-method=getOrCreate` +
		`&rvt-runner=default&rvt-key=${encodeURIComponent(key)}&rvt-crash-policy=sleep`
	);
}

const SUBPROTOCOLS = ["rivet", "rivet_encoding.json"];

export class RivetWs {
	/** Open a connection to actor `key`; `ready` resolves {ms, actorId, connectionId} on Init. */
	constructor(host, port, key, { timeoutMs = 30000, onEvent = null } = {}) {
		this.key = key;
		this.nextId = 0;
		this.pending = new Map(); // id -> cb(err, output, t1)
		this.onEvent = onEvent; // (name, args, t) => void
		this.closed = false;
		this.closeInfo = null;
		this.t0 = performance.now();
		const url = `ws://${host}:${port}${connectPath(key)}`;
		this.ws =
			clientKind === "ws"
				? new WebSocket(url, SUBPROTOCOLS, { perMessageDeflate: false, handshakeTimeout: timeoutMs })
				: new RawWebSocket(url, SUBPROTOCOLS, { handshakeTimeout: timeoutMs });
		let settle;
		this.ready = new Promise((resolve, reject) => (settle = { resolve, reject }));
		this.ready.catch(() => {}); // callers that never await it must not crash the process
		const timer = setTimeout(() => {
			if (settle) {
				const s = settle;
				settle = null;
				s.reject(new Error(`no Init within ${timeoutMs} ms`));
				this.close();
			}
		}, timeoutMs);
		this.ws.on("message", (data, isBinary) => {
			const t = performance.now();
			let msg;
			try {
				msg = JSON.parse(isBinary ? data.toString("utf8") : data);
			} catch {
				this._fail(new Error(`bad JSON frame: ${String(data).slice(0, 200)}`));
				return;
			}
			const body = msg?.body;
			const val = body?.val;
			switch (body?.tag) {
				case "ActionResponse": {
					const id = Array.isArray(val.id) ? val.id[1] : String(val.id);
					const cb = this.pending.get(id);
					if (cb) {
						this.pending.delete(id);
						cb(null, val.output, t);
					}
					break;
				}
				case "Event":
					if (this.onEvent) this.onEvent(val.name, val.args, t);
					break;
				case "Init":
					if (settle) {
						clearTimeout(timer);
						const s = settle;
						settle = null;
						this.actorId = val.actorId;
						this.connectionId = val.connectionId;
						s.resolve({ ms: t - this.t0, actorId: val.actorId, connectionId: val.connectionId });
					}
					break;
				case "Error": {
					const err = new Error(`${val.group}.${val.code}: ${String(val.message).slice(0, 200)}`);
					const aid = val.actionId;
					const id = aid == null ? null : Array.isArray(aid) ? aid[1] : String(aid);
					const cb = id !== null ? this.pending.get(id) : null;
					if (cb) {
						this.pending.delete(id);
						cb(err, null, t);
					} else if (settle) {
						clearTimeout(timer);
						const s = settle;
						settle = null;
						s.reject(err);
					}
					break;
				}
				default:
					break;
			}
		});
		const onGone = (err) => {
			clearTimeout(timer);
			this.closed = true;
			if (settle) {
				const s = settle;
				settle = null;
				s.reject(err);
			}
			this._failPending(err);
		};
		this.ws.on("error", (e) => onGone(e));
		this.ws.on("close", (code, reason) => {
			this.closeInfo = { code, reason: String(reason) };
			onGone(new Error(`socket closed ${code} ${String(reason).slice(0, 200)}`));
		});
	}

	/** Send ActionRequest(name, argsJson); cb(err, output, tReceived). Returns the send time. */
	action(name, argsJson, cb) {
		const id = String(this.nextId++);
		if (this.closed) {
			const t = performance.now();
			queueMicrotask(() => cb(new Error("socket closed"), null, t));
			return t;
		}
		this.pending.set(id, cb);
		const t = performance.now();
		this.ws.send(`{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","${id}"],"name":"${name}","args":${argsJson}}}}`);
		return t;
	}

	/** Promise form: resolves {output, ms}; rejects on error/close/timeout. */
	call(name, argsJson, timeoutMs = 30000) {
		return new Promise((resolve, reject) => {
			let timer;
			const t0 = this.action(name, argsJson, (err, output, t1) => {
				clearTimeout(timer);
				if (err) reject(err);
				else resolve({ output, ms: t1 - t0 });
			});
			timer = setTimeout(() => {
				this._fail(new Error(`timeout after ${timeoutMs} ms`));
			}, timeoutMs);
		});
	}

	subscribe(eventName, subscribe = true) {
		if (!this.closed)
			this.ws.send(`{"body":{"tag":"SubscriptionRequest","val":{"eventName":"${eventName}","subscribe":${subscribe}}}}`);
	}

	/** Fail every request in flight and drop the socket (timeouts, protocol errors). */
	_fail(err) {
		this._failPending(err);
		this.close();
	}
	_failPending(err) {
		if (!this.pending.size) return;
		const t = performance.now();
		const cbs = [...this.pending.values()];
		this.pending.clear();
		for (const cb of cbs) cb(err, null, t);
	}

	close() {
		if (this.closed) return;
		this.closed = true;
		try {
			this.ws.terminate();
		} catch {}
	}
}

/**
 * Open connections to `keys`, `conc` at a time (each retried `retries` times). Resolves
 * { conns, ms (time-to-Init samples), errors (messages of failed attempts) }; if a key still fails,
 * closes everything it opened and rejects.
 */
export async function connectMany(host, port, keys, { conc = 4, timeoutMs = 30000, onEvent = null, retries = 0 } = {}) {
	const conns = new Array(keys.length);
	const ms = [];
	const errors = [];
	let next = 0;
	let fatal = null;
	await Promise.all(
		Array.from({ length: Math.min(conc, keys.length) }, async () => {
			while (next < keys.length && !fatal) {
				const i = next++;
				for (let attempt = 0; ; attempt++) {
					const c = new RivetWs(host, port, keys[i], { timeoutMs, onEvent: onEvent ? (n, a, t) => onEvent(i, n, a, t) : null });
					try {
						const r = await c.ready;
						ms.push(r.ms);
						conns[i] = c;
						break;
					} catch (e) {
						c.close();
						errors.push(e.message);
						if (attempt >= retries || fatal) {
							fatal ??= new Error(`connecting ${keys[i]} failed: ${e.message}`);
							break;
						}
					}
				}
			}
		}),
	);
	if (fatal) {
		for (const x of conns) x?.close();
		throw fatal;
	}
	return { conns, ms, errors };
}
