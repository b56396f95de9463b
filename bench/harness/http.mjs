// Minimal keep-alive HTTP/1.1 client for the load generator: one request in flight per connection,
// requests pre-serialised into Buffers, responses parsed just enough (status, Content-Length or
// chunked body). This costs the harness a few µs per request, far less than node:http / fetch, so the
// load generator stays out of the way at 10-20k req/s. A node:http implementation with the same
// interface is kept for cross-checking (--client node-http).
import http from "node:http";
import net from "node:net";

const CRLFCRLF = Buffer.from("\r\n\r\n");

/** Build the bytes of `POST path` with a JSON body. */
export function buildRequest(host, port, path, bodyStr, extraHeaders = {}) {
	const body = Buffer.from(bodyStr);
	let head =
		`POST ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\n` +
		`Content-Type: application/json\r\nx-rivet-encoding: json\r\nContent-Length: ${body.length}\r\n`;
	for (const [k, v] of Object.entries(extraHeaders)) head += `${k}: ${v}\r\n`;
	head += "\r\n";
	return { buf: Buffer.concat([Buffer.from(head, "latin1"), body]), path, bodyStr, extraHeaders };
}

/** Build the bytes of `GET path` (no body). */
export function buildGet(host, port, path) {
	const head = `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`;
	return { buf: Buffer.from(head, "latin1"), path, bodyStr: null, extraHeaders: {}, method: "GET" };
}

export class RawConn {
	constructor(host, port) {
		this.host = host;
		this.port = port;
		this.sock = null;
		this.connected = false;
		this.buf = null;
		this.cb = null; // callback of the request in flight
		this.startedAt = 0; // performance.now() of the request in flight (for the watchdog)
		this.queued = null;
		this.closing = false;
	}

	_connect() {
		const sock = net.connect({ host: this.host, port: this.port });
		sock.setNoDelay(true);
		this.sock = sock;
		this.connected = false;
		this.buf = null;
		sock.on("connect", () => {
			this.connected = true;
			if (this.queued) {
				const q = this.queued;
				this.queued = null;
				sock.write(q);
			}
		});
		sock.on("data", (chunk) => this._onData(chunk));
		const fail = (err) => {
			if (this.sock !== sock) return;
			this.sock = null;
			this.connected = false;
			this.queued = null;
			this._finish(err ?? new Error("connection closed"), 0, null);
		};
		sock.on("error", fail);
		sock.on("close", () => fail(null));
	}

	/** Send pre-built request bytes; cb(err, status, bodyString). One request at a time. */
	send(reqBuf, cb) {
		if (this.cb) throw new Error("RawConn: request already in flight");
		this.cb = cb;
		this.startedAt = performance.now();
		if (!this.sock) this._connect();
		if (this.connected) this.sock.write(reqBuf.buf ?? reqBuf);
		else this.queued = reqBuf.buf ?? reqBuf;
	}

	/** Abort the request in flight (timeout): destroys the socket; next send reconnects. */
	abort(err) {
		const s = this.sock;
		this.sock = null;
		this.connected = false;
		this.queued = null;
		if (s) s.destroy();
		this._finish(err, 0, null);
	}

	close() {
		this.closing = true;
		if (this.sock) this.sock.destroy();
		this.sock = null;
	}

	_finish(err, status, body) {
		const cb = this.cb;
		if (!cb) return;
		this.cb = null;
		cb(err, status, body);
	}

	_onData(chunk) {
		this.buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
		const buf = this.buf;
		const he = buf.indexOf(CRLFCRLF);
		if (he < 0) return;
		const head = buf.toString("latin1", 0, he);
		const status = Number(head.slice(9, 12));
		const bodyStart = he + 4;
		let bodyEnd = -1;
		let body;
		const cl = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
		if (cl) {
			bodyEnd = bodyStart + Number(cl[1]);
			if (buf.length < bodyEnd) return;
			body = buf.toString("utf8", bodyStart, bodyEnd);
		} else if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) {
			// chunked: size CRLF data CRLF ... 0 CRLF [trailers] CRLF
			let p = bodyStart;
			const parts = [];
			for (;;) {
				const le = buf.indexOf("\r\n", p, "latin1");
				if (le < 0) return;
				const size = parseInt(buf.toString("latin1", p, le), 16);
				if (Number.isNaN(size)) {
					this.abort(new Error("bad chunk size"));
					return;
				}
				if (size === 0) {
					const te = buf.indexOf(CRLFCRLF, le);
					if (te < 0) return;
					bodyEnd = te + 4;
					break;
				}
				if (buf.length < le + 2 + size + 2) return;
				parts.push(buf.toString("utf8", le + 2, le + 2 + size));
				p = le + 2 + size + 2;
			}
			body = parts.join("");
		} else if (status === 204 || status === 304 || (status >= 100 && status < 200)) {
			bodyEnd = bodyStart;
			body = "";
		} else {
			// body delimited by connection close: not expected from these servers
			this.abort(new Error(`response without length (status ${status})`));
			return;
		}
		this.buf = buf.length > bodyEnd ? buf.subarray(bodyEnd) : null;
		if (/\r\nconnection:[ \t]*close/i.test(head)) {
			const s = this.sock;
			this.sock = null;
			this.connected = false;
			if (s) s.destroy();
		}
		this._finish(null, status, body);
	}
}

/** Same interface on top of node:http with a keep-alive agent (cross-check only). */
export class NodeHttpConn {
	constructor(host, port, agent) {
		this.host = host;
		this.port = port;
		this.agent = agent;
		this.cb = null;
		this.startedAt = 0;
		this.req = null;
	}
	send(reqBuf, cb) {
		this.cb = cb;
		this.startedAt = performance.now();
		const body = Buffer.from(reqBuf.bodyStr ?? "");
		const req = http.request(
			{
				host: this.host,
				port: this.port,
				method: reqBuf.method ?? "POST",
				path: reqBuf.path,
				agent: this.agent,
				headers: {
					"content-type": "application/json",
					"x-rivet-encoding": "json",
					"content-length": body.length,
					...reqBuf.extraHeaders,
				},
			},
			(res) => {
				const chunks = [];
				res.on("data", (c) => chunks.push(c));
				res.on("end", () => this._finish(null, res.statusCode, Buffer.concat(chunks).toString()));
				res.on("error", (e) => this._finish(e, 0, null));
			},
		);
		req.on("error", (e) => this._finish(e, 0, null));
		req.end(body);
		this.req = req;
	}
	abort(err) {
		if (this.req) this.req.destroy();
		this._finish(err, 0, null);
	}
	close() {}
	_finish(err, status, body) {
		const cb = this.cb;
		if (!cb) return;
		this.cb = null;
		this.req = null;
		cb(err, status, body);
	}
}

/** Factory for `n` connections of the chosen client kind. */
export function makeConns(kind, host, port, n) {
	if (kind === "node-http") {
		const agent = new http.Agent({ keepAlive: true, maxSockets: n, maxFreeSockets: n });
		return Array.from({ length: n }, () => new NodeHttpConn(host, port, agent));
	}
	return Array.from({ length: n }, () => new RawConn(host, port));
}

/** Promise wrapper with a timeout. Resolves {status, body, ms} or rejects. */
export function request(conn, reqBuf, timeoutMs = 30000) {
	return new Promise((resolve, reject) => {
		const t0 = performance.now();
		const timer = setTimeout(() => conn.abort(new Error(`timeout after ${timeoutMs} ms`)), timeoutMs);
		conn.send(reqBuf, (err, status, body) => {
			clearTimeout(timer);
			if (err) reject(err);
			else resolve({ status, body, ms: performance.now() - t0 });
		});
	});
}
