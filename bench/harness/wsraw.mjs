// A minimal RFC 6455 client socket on node:net for the load generator (--ws-client raw, the default):
// the upgrade request, masked text frames out, unmasked frames in (text/binary, fragmented messages,
// ping -> pong, close). No extensions. It exposes the small part of the `ws` package's interface that
// ws.mjs uses (on("open"|"message"|"close"|"error"), send(string), terminate()), at a fraction of its
// CPU per frame. The `ws` package stays available as a cross-check (--ws-client ws).
import crypto from "node:crypto";
import { EventEmitter } from "node:events";
import net from "node:net";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const CRLFCRLF = Buffer.from("\r\n\r\n");

// masking keys come from a pooled random buffer (one randomFillSync per 2048 frames)
let maskPool = Buffer.alloc(0);
let maskPos = 0;
function maskKey() {
	if (maskPos + 4 > maskPool.length) {
		maskPool = crypto.randomFillSync(Buffer.allocUnsafe(8192));
		maskPos = 0;
	}
	const k = maskPool.subarray(maskPos, maskPos + 4);
	maskPos += 4;
	return k;
}

/** One masked frame (client -> server) holding `payload` (a Buffer). */
function frame(opcode, payload) {
	const len = payload.length;
	const hl = len < 126 ? 2 : len < 65536 ? 4 : 10;
	const out = Buffer.allocUnsafe(hl + 4 + len);
	out[0] = 0x80 | opcode;
	if (len < 126) out[1] = 0x80 | len;
	else if (len < 65536) {
		out[1] = 0x80 | 126;
		out.writeUInt16BE(len, 2);
	} else {
		out[1] = 0x80 | 127;
		out.writeUInt32BE(0, 2);
		out.writeUInt32BE(len, 6);
	}
	const k = maskKey();
	k.copy(out, hl);
	const p = hl + 4;
	for (let i = 0; i < len; i++) out[p + i] = payload[i] ^ k[i & 3];
	return out;
}

export class RawWebSocket extends EventEmitter {
	/** url: ws://host:port/path?query */
	constructor(url, protocols, { handshakeTimeout = 30000 } = {}) {
		super();
		const u = new URL(url);
		this.protocol = null;
		this.open = false;
		this.done = false;
		this.buf = null;
		this.frag = null; // fragments of a message in progress
		this.fragBinary = false;
		const key = crypto.randomBytes(16).toString("base64");
		this.expectAccept = crypto.createHash("sha1").update(key + GUID).digest("base64");
		this.offered = protocols;
		const sock = net.connect({ host: u.hostname, port: Number(u.port) });
		sock.setNoDelay(true);
		this.sock = sock;
		this.hsTimer = setTimeout(() => this._error(new Error(`handshake timeout after ${handshakeTimeout} ms`)), handshakeTimeout);
		sock.on("connect", () => {
			sock.write(
				`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
					`Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ${protocols.join(", ")}\r\n\r\n`,
				"latin1",
			);
		});
		sock.on("data", (chunk) => (this.open ? this._frames(chunk) : this._handshake(chunk)));
		sock.on("error", (e) => this._error(e));
		sock.on("close", () => this._closed(1006, ""));
	}

	_handshake(chunk) {
		this.buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
		const he = this.buf.indexOf(CRLFCRLF);
		if (he < 0) return;
		const head = this.buf.toString("latin1", 0, he);
		const rest = this.buf.subarray(he + 4);
		this.buf = null;
		clearTimeout(this.hsTimer);
		const status = Number(head.slice(9, 12));
		if (status !== 101) return this._error(new Error(`upgrade refused: ${head.split("\r\n")[0]}`));
		const accept = /\r\nsec-websocket-accept:[ \t]*([^\r]*)/i.exec(head)?.[1]?.trim();
		if (accept !== this.expectAccept) return this._error(new Error("bad Sec-WebSocket-Accept"));
		const proto = /\r\nsec-websocket-protocol:[ \t]*([^\r]*)/i.exec(head)?.[1]?.trim();
		if (!proto || !this.offered.includes(proto)) return this._error(new Error(`server sent no or an unoffered subprotocol (${proto})`));
		this.protocol = proto;
		this.open = true;
		this.emit("open");
		if (rest.length) this._frames(rest);
	}

	// Frames sent from the message handlers while one chunk is parsed go out in one write (cork).
	_frames(chunk) {
		this.sock.cork();
		try {
			this._parse(chunk);
		} finally {
			if (!this.sock.destroyed) this.sock.uncork();
		}
	}

	_parse(chunk) {
		const buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
		let p = 0;
		const n = buf.length;
		while (n - p >= 2 && !this.done) {
			const b0 = buf[p];
			const b1 = buf[p + 1];
			let len = b1 & 0x7f;
			let h = 2;
			if (len === 126) {
				if (n - p < 4) break;
				len = buf.readUInt16BE(p + 2);
				h = 4;
			} else if (len === 127) {
				if (n - p < 10) break;
				len = buf.readUInt32BE(p + 2) * 2 ** 32 + buf.readUInt32BE(p + 6);
				h = 10;
			}
			if (b1 & 0x80) return this._error(new Error("masked frame from the server"));
			if (n - p < h + len) break;
			const s = p + h;
			const e = s + len;
			p = e;
			const fin = b0 & 0x80;
			const op = b0 & 0x0f;
			if (op === 1 || op === 2) {
				if (fin) this.emit("message", op === 1 ? buf.toString("utf8", s, e) : buf.subarray(s, e), op === 2);
				else {
					this.frag = [buf.subarray(s, e)];
					this.fragBinary = op === 2;
				}
			} else if (op === 0) {
				if (!this.frag) return this._error(new Error("continuation without a message"));
				this.frag.push(buf.subarray(s, e));
				if (fin) {
					const all = Buffer.concat(this.frag);
					this.frag = null;
					this.emit("message", this.fragBinary ? all : all.toString("utf8"), this.fragBinary);
				}
			} else if (op === 9) {
				this.sock.write(frame(10, Buffer.from(buf.subarray(s, e))));
			} else if (op === 8) {
				const code = len >= 2 ? buf.readUInt16BE(s) : 1005;
				const reason = len > 2 ? buf.toString("utf8", s + 2, e) : "";
				try {
					this.sock.end(frame(8, len >= 2 ? Buffer.from(buf.subarray(s, s + 2)) : Buffer.alloc(0)));
				} catch {}
				this._closed(code, reason);
				return;
			}
			// op 10 (pong): ignored
		}
		this.buf = p < n ? buf.subarray(p) : null;
	}

	send(str) {
		if (this.open && !this.done) this.sock.write(frame(1, Buffer.from(str)));
	}

	terminate() {
		this.sock.destroy();
		this._closed(1006, "");
	}

	_error(err) {
		if (this.done) return;
		this.emit("error", err);
		this.sock.destroy();
		this._closed(1006, "");
	}

	_closed(code, reason) {
		if (this.done) return;
		this.done = true;
		this.open = false;
		clearTimeout(this.hsTimer);
		this.emit("close", code, reason);
	}
}
