// Queue scenario (issue 5): a durable queue with ONE consumer. `c` senders send to the same
// `worker` actor (bench/actors.py, bench/official/server.mjs), whose run loop takes each `jobs`
// message with completable=true and completes it with [n, done]:
//
//   POST /gateway/worker/queue/jobs?<query gateway>   x-rivet-encoding: json
//   {"body":{"s":<sender>,"n":<seq>},"wait":true,"name":"jobs"}  ->  200 {"status":"completed","response":[seq, done]}
//
// (the body the official client's `handle.send("jobs", body, {wait: true})` sends in json).
// Variants, for each concurrency: `send wait=true` (closed loop of send-to-completion: msgs/s and
// latency are whole round trips, enqueue + consume + complete) and `enqueue wait=false` (closed loop
// of durable enqueues while the consumer runs; afterwards the harness waits until the consumer has
// drained the backlog). `--queue-client official` drives the official npm client instead of raw
// HTTP (cross-check; its default encoding is bare).
import { buildRequest, makeConns, RawConn } from "./http.mjs";
import { act, callEach } from "./lifecycle.mjs";
import { gatewayPath, measureEnd, measureStart, runLoop } from "./scenarios.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The official client's handle, behind the load generator's connection interface (send/abort/close). */
class OfficialSender {
	constructor(handle) {
		this.handle = handle;
		this.cb = null;
		this.startedAt = 0;
		this.ctl = null;
	}
	send(msg, cb) {
		this.cb = cb;
		this.startedAt = performance.now();
		const ctl = (this.ctl = new AbortController());
		const opts = msg.wait ? { wait: true, signal: ctl.signal } : { signal: ctl.signal };
		this.handle.send("jobs", msg.body, opts).then(
			(r) => this._finish(ctl, null, 200, r ?? { status: "completed" }),
			(e) => this._finish(ctl, e, 0, null),
		);
	}
	abort(err) {
		const ctl = this.ctl;
		if (ctl) ctl.abort(err);
		this._finish(ctl, err, 0, null);
	}
	close() {}
	_finish(ctl, err, status, body) {
		if (ctl !== this.ctl || !this.cb) return; // a late answer of an aborted send
		const cb = this.cb;
		this.cb = null;
		this.ctl = null;
		cb(err, status, body);
	}
}

const officialClients = new Map(); // endpoint -> client (every server instance has its own port)
async function officialHandle(ep, key, encoding) {
	const endpoint = `http://${ep.host}:${ep.port}`;
	let client = officialClients.get(endpoint);
	if (!client) {
		const { createClient } = await import("rivetkit/client");
		client = createClient({ endpoint, namespace: "default", poolName: "default", encoding });
		officialClients.set(endpoint, client);
	}
	return client.getOrCreate("worker", [key]);
}

/** `{status, response?}` of a queue send (a raw JSON reply, or the official client's result). */
function sendResult(status, body) {
	if (status !== 200) throw new Error(`HTTP ${status}: ${String(body).slice(0, 300)}`);
	if (typeof body !== "string") return body;
	try {
		return JSON.parse(body);
	} catch {
		throw new Error(`bad JSON: ${String(body).slice(0, 300)}`);
	}
}

const stats = async (conn, ep, key, timeoutMs) => (await act(conn, ep, "worker", "stats", key, [], timeoutMs)).v;

/**
 * queue: for each mode (`wait`, `nowait`) and each concurrency `c`, a fresh worker actor and `c`
 * senders. Checks: every wait=true reply is `completed` with the sender's own seq; the consumer's
 * `done` counts are distinct (and consecutive at c=1: one consumer, FIFO); afterwards the consumer
 * has completed exactly the acknowledged sends (up to the failed ones) and never saw a sender's
 * messages out of order. Server CPU per message is over the measured window for wait=true; for
 * wait=false also over the whole run including the drain (enqueue + consume of every message).
 */
export async function queueScenario({ ep, tag, pids, concurrencies, modes, warmupMs, durationMs, timeoutMs, drainMs, clientKind, queueClient, encoding, log, gateFn }) {
	for (const mode of modes) {
		const wait = mode === "wait";
		for (const c of concurrencies) {
			await gateFn();
			const key = `queue-${tag}-${mode}-c${c}`;
			const variant =
				(wait ? `send wait=true, ${c} senders -> 1 consumer` : `enqueue wait=false, ${c} senders (1 consumer)`) +
				(queueClient === "official" ? `, official client (${encoding})` : "");
			try {
				await callEach(ep, "worker", [key], "noop", () => [0], 1, timeoutMs, { attempts: 5 });
			} catch (e) {
				// the official engine sometimes cannot place a new actor for minutes: skip this variant only
				log({ scenario: "error", variant: `queue ${variant}: creating the worker`, error: e.message });
				continue;
			}
			let ctl = new RawConn(ep.host, ep.port);
			try {
				const [base, disorder0] = await stats(ctl, ep, key, timeoutMs);
				ctl.close(); // a fresh one afterwards: servers drop idle keep-alive connections after ~5 s
				const path = gatewayPath("jobs", key, "worker", "queue");
				const seq = new Array(c).fill(0);
				const cur = new Array(c).fill(-1);
				const makeReq =
					queueClient === "official"
						? (i) => {
								cur[i] = seq[i]++;
								return { body: { s: i, n: cur[i] }, wait };
							}
						: (i) => {
								cur[i] = seq[i]++;
								return buildRequest(ep.host, ep.port, path, `{"body":{"s":${i},"n":${cur[i]}},"wait":${wait},"name":"jobs"}`);
							};
				const conns =
					queueClient === "official"
						? await Promise.all(Array.from({ length: c }, async () => new OfficialSender(await officialHandle(ep, key, encoding))))
						: makeConns(clientKind, ep.host, ep.port, c);
				const dones = [];
				let wrongSeq = 0;
				let wrongFirst = null;
				const onReply = (i, err, status, body) => {
					if (err) throw err;
					const r = sendResult(status, body);
					if (r.status !== "completed") throw new Error(`status ${r.status}`);
					if (!wait) return true;
					const [n, done] = Array.isArray(r.response) ? r.response : [];
					if (n !== cur[i]) {
						wrongSeq++;
						wrongFirst ??= `sender ${i} sent n=${cur[i]}, got the completion ${JSON.stringify(r.response)}`;
						return false;
					}
					dones.push(done);
					return true;
				};
				// wait=false: the consumer's progress at the window's edges (stats replies, timed on arrival)
				let edge0 = null;
				let edge1 = null;
				let tWindowEnd = null;
				const edge = (set) => () => {
					tWindowEnd = performance.now(); // the last call is the window's end
					const c2 = new RawConn(ep.host, ep.port);
					set(stats(c2, ep, key, timeoutMs).then((s) => ({ done: s[0], t: performance.now() })).finally(() => c2.close()));
				};
				const whole0 = measureStart(pids);
				const r = await runLoop({
					conns,
					makeReq,
					onReply,
					pids,
					warmupMs,
					durationMs,
					timeoutMs,
					onWindowStart: wait ? null : edge((p) => (edge0 = p)),
					onWindowEnd: wait ? null : edge((p) => (edge1 = p)),
				});
				const problems = [];
				if (!r.drained) problems.push("sends still in flight after the drain timeout");
				if (wrongSeq) problems.push(`${wrongSeq} completions for another message (${wrongFirst})`);
				// wait for the consumer to complete every acknowledged message
				ctl = new RawConn(ep.host, ep.port);
				const tDrain0 = performance.now();
				let end = await stats(ctl, ep, key, timeoutMs);
				while (end[0] - base < r.okTotal && performance.now() - tDrain0 < drainMs) {
					await sleep(wait ? 50 : 20);
					end = await stats(ctl, ep, key, timeoutMs);
				}
				const tDrained = performance.now();
				const whole = measureEnd(whole0, pids, end[0] - base);
				const consumed = end[0] - base;
				if (r.errorsTotal === 0 ? consumed !== r.okTotal : consumed < r.okTotal || consumed > r.okTotal + r.errorsTotal)
					problems.push(`consumer completed ${consumed} messages, ${r.okTotal} sends acknowledged, ${r.errorsTotal} failed`);
				if (end[1] !== disorder0) problems.push(`${end[1] - disorder0} messages consumed out of their sender's order`);
				if (wait) {
					const d = Float64Array.from(dones).sort();
					let dup = 0;
					let gaps = 0;
					for (let j = 1; j < d.length; j++) {
						if (d[j] === d[j - 1]) dup++;
						else if (d[j] !== d[j - 1] + 1) gaps++;
					}
					if (dup) problems.push(`${dup} duplicate consumer counts`);
					if (d.length && (d[0] <= base || d[d.length - 1] > end[0])) problems.push(`consumer counts outside (${base}, ${end[0]}]`);
					if (gaps && r.errorsTotal === 0) problems.push(`${gaps} gaps in the consumer counts without failed sends`);
				}
				const e0 = edge0 ? await edge0 : null;
				const e1 = edge1 ? await edge1 : null;
				const drainS = e1 ? (tDrained - tWindowEnd) / 1000 : null;
				const { okTotal, drained, ...rest } = r;
				log({
					scenario: "queue",
					variant,
					mode,
					queueClient,
					...rest,
					sent: okTotal,
					consumed,
					// wait=false only: the consumer's own rate while the senders ran, backlog, drain
					consumedPerS: e0 && e1 ? (e1.done - e0.done) / ((e1.t - e0.t) / 1000) : null,
					backlogAtEnd: wait ? null : okTotal - (e1?.done ?? end[0]) + base,
					drainS,
					drainPerS: e1 && end[0] - e1.done >= Math.max(100, 2 * c) ? (end[0] - e1.done) / ((tDrained - e1.t) / 1000) : null,
					wholeCpuUsPerMsg: whole.serverCpuUsPerOp,
					wholeS: whole.wallS,
					consistent: problems.length === 0,
					consistencyProblems: problems.slice(0, 5),
				});
			} finally {
				ctl.close();
			}
		}
	}
}
