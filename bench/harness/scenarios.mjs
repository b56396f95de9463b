// Scenarios: `cold` (new key -> first increment, sequential) and `http` (closed-loop increment at
// fixed concurrency on one hot actor and over many actors), with reply checking and CPU accounting.
import { buildRequest, makeConns, RawConn, request } from "./http.mjs";
import os from "node:os";
import { cpuDelta, cpuSnapshot, machineBusyPct, machineSnapshot, rssMiB } from "./procs.mjs";

const NCPU = os.cpus().length;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The query-gateway path of `{kind}/{action}` (kind `action`, or `queue` with a queue name) on actor `name` / [key]. */
export function gatewayPath(action, key, name = "counter", kind = "action") {
	return (
		`/gateway/${name}/${kind}/${encodeURIComponent(action)}?rvt-namespace=default&rvt-method=getOrCreate` +
		`&rvt-runner=default&rvt-key=${encodeURIComponent(key)}&rvt-crash-policy=sleep`
	);
}

export class Endpoint {
	constructor(host, port) {
		this.host = host;
		this.port = port;
		this.cache = new Map();
	}
	/** The pre-built `POST` calling `action(...args)` on actor `name` / [key] (getOrCreate). */
	req(action, key, args, name = "counter") {
		const id = `${name}\u0000${action}\u0000${key}\u0000${JSON.stringify(args)}`;
		let r = this.cache.get(id);
		if (!r) {
			r = buildRequest(this.host, this.port, gatewayPath(action, key, name), JSON.stringify({ args }));
			if (this.cache.size < 10000) this.cache.set(id, r);
		}
		return r;
	}
}

/** Parse `{"output": n}`; returns the integer or throws with a readable message. */
export function intOutput(status, body) {
	if (status !== 200) throw new Error(`HTTP ${status}: ${String(body).slice(0, 300)}`);
	let v;
	try {
		v = JSON.parse(body).output;
	} catch {
		throw new Error(`bad JSON: ${String(body).slice(0, 300)}`);
	}
	if (!Number.isInteger(v)) throw new Error(`output is not an int: ${String(body).slice(0, 300)}`);
	return v;
}

export function quantiles(arr) {
	const n = arr.length;
	if (!n) return { n: 0 };
	const a = Float64Array.from(arr).sort();
	const q = (p) => a[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))];
	let sum = 0;
	for (const x of a) sum += x;
	return { n, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: a[n - 1], mean: sum / n };
}

/** One-shot call that must answer 200 with an int output. */
export async function call(conn, ep, action, key, args, timeoutMs) {
	const r = await request(conn, ep.req(action, key, args), timeoutMs);
	return { v: intOutput(r.status, r.body), ms: r.ms };
}

/**
 * Wait until a brand-new actor answers (noop on a fresh key), so one scenario's aftermath
 * (e.g. the official stack still allocating) does not leak into the next. Returns waited ms.
 */
export async function gate(ep, tag, maxMs = 60000) {
	const conn = new RawConn(ep.host, ep.port);
	const t0 = performance.now();
	let i = 0;
	let lastErr = null;
	try {
		while (performance.now() - t0 < maxMs) {
			try {
				const r = await request(conn, ep.req("noop", `gate-${tag}-${i++}`, [7]), 20000);
				if (intOutput(r.status, r.body) === 7) return { waitedMs: performance.now() - t0 };
			} catch (e) {
				lastErr = e;
			}
			await sleep(250);
		}
	} finally {
		conn.close();
	}
	throw new Error(`gate: no new actor answered within ${maxMs} ms: ${lastErr?.message}`);
}

export function measureStart(pids) {
	return { cpu: cpuSnapshot(pids), mach: machineSnapshot(), self: process.cpuUsage(), t: performance.now() };
}
export function measureEnd(start, pids, ops) {
	const end = measureStart(pids);
	const wallS = (end.t - start.t) / 1000;
	const srv = cpuDelta(start.cpu, end.cpu);
	const selfUs = end.self.user - start.self.user + (end.self.system - start.self.system);
	return {
		wallS,
		serverCpuS: srv.us / 1e6,
		serverCpuUsPerOp: ops ? srv.us / ops : null,
		serverCpuUsPerOpByProc: ops
			? Object.fromEntries(Object.entries(srv.byComm).map(([k, v]) => [k, Math.round(v / ops)]))
			: null,
		serverCpuPctCore: (100 * srv.us) / 1e6 / wallS,
		harnessCpuUsPerOp: ops ? selfUs / ops : null,
		harnessCpuPctCore: (100 * selfUs) / 1e6 / wallS,
		machineBusyPct: machineBusyPct(start.mach, end.mach),
		// CPU used by everything else on the machine during the window (% of one core): noise indicator
		otherCpuPctCore: Math.max(
			0,
			machineBusyPct(start.mach, end.mach) * NCPU - (100 * srv.us) / 1e6 / wallS - (100 * selfUs) / 1e6 / wallS,
		),
		serverRssMiB: Math.round(rssMiB(pids) * 10) / 10,
	};
}

/** cold: N never-seen keys, one after the other, latency from send to the first increment result. */
export async function coldScenario({ ep, tag, pids, n, timeoutMs, log }) {
	const rows = [];
	const conn = new RawConn(ep.host, ep.port);
	try {
		// open + warm the keep-alive connection so the first sample does not pay the TCP handshake
		await call(conn, ep, "noop", `cold-${tag}-warmconn`, [0], timeoutMs);
		const lat = [];
		let errors = 0;
		let firstError = null;
		let wrongValue = 0;
		const m0 = measureStart(pids);
		for (let i = 0; i < n; i++) {
			try {
				const { v, ms } = await call(conn, ep, "increment", `cold-${tag}-${i}`, [1], timeoutMs);
				if (v !== 1) {
					wrongValue++;
					firstError ??= `new actor returned ${v}, expected 1`;
				}
				lat.push(ms);
			} catch (e) {
				errors++;
				firstError ??= e.message;
			}
		}
		const cost = measureEnd(m0, pids, lat.length);
		rows.push({
			scenario: "cold",
			variant: "new key -> first increment",
			concurrency: 1,
			latencyMs: quantiles(lat),
			errors,
			firstError,
			consistent: wrongValue === 0, // errors are reported separately
			...cost,
		});
		log(rows.at(-1));

		// warm-actor reference: the same call, sequential, on an actor that already exists
		const key = `cold-${tag}-warm`;
		let prev = (await call(conn, ep, "increment", key, [1], timeoutMs)).v;
		const wlat = [];
		let werr = 0;
		let wfirst = null;
		let wbad = 0;
		const w0 = measureStart(pids);
		for (let i = 0; i < n; i++) {
			try {
				const { v, ms } = await call(conn, ep, "increment", key, [1], timeoutMs);
				if (prev !== null && v !== prev + 1) {
					wbad++;
					wfirst ??= `expected ${prev + 1}, got ${v}`;
				}
				prev = v;
				wlat.push(ms);
			} catch (e) {
				werr++;
				wfirst ??= e.message;
				prev = null; // a failed call may or may not have been applied
			}
		}
		rows.push({
			scenario: "cold",
			variant: "warm actor increment (reference)",
			concurrency: 1,
			latencyMs: quantiles(wlat),
			errors: werr,
			firstError: wfirst,
			consistent: wbad === 0,
			...measureEnd(w0, pids, wlat.length),
		});
		log(rows.at(-1));
	} finally {
		conn.close();
	}
	return rows;
}

/**
 * After a closed loop of increments: every acknowledged count must be distinct, lie in
 * (count before, count after], and the final getCount must have moved by exactly the number of
 * acknowledged increments (or, with errors, by at most that many more). Appends to `problems`.
 */
export async function checkCounts(ep, distinct, outputs, base, errTotal, timeoutMs, problems) {
	const ctl = new RawConn(ep.host, ep.port);
	try {
		for (const k of distinct) {
			const fin = (await call(ctl, ep, "getCount", k, [], timeoutMs)).v;
			const vals = Float64Array.from(outputs.get(k)).sort();
			const b = base.get(k);
			let dup = 0;
			let outOfRange = 0;
			for (let j = 0; j < vals.length; j++) {
				if (j && vals[j] === vals[j - 1]) dup++;
				if (vals[j] <= b || vals[j] > fin) outOfRange++;
			}
			if (dup) problems.push(`${k}: ${dup} duplicate counts`);
			if (outOfRange) problems.push(`${k}: ${outOfRange} counts outside (${b}, ${fin}]`);
			const applied = fin - b;
			if (errTotal === 0 && applied !== vals.length)
				problems.push(`${k}: getCount moved by ${applied} but ${vals.length} increments were acknowledged`);
			if (errTotal > 0 && (applied < vals.length || applied > vals.length + errTotal))
				problems.push(`${k}: getCount moved by ${applied}, acknowledged ${vals.length}, errors ${errTotal}`);
			if (problems.length > 5) break;
		}
	} finally {
		ctl.close();
	}
}

/**
 * The closed-loop engine shared by the http, schedule-load and queue scenarios: `conns.length`
 * connections, each with one request in flight; `makeReq(i)` is the next request of connection i
 * and `onReply(i, err, status, body)` judges its reply (true = success; it records whatever the
 * scenario checks afterwards). Runs `warmupMs` + `durationMs` (or until `stopSignal` resolves);
 * throughput, latency and errors count replies inside the measured window, which lies between the
 * two CPU snapshots. `onWindowStart` / `onWindowEnd` run synchronously at its edges. Afterwards the
 * requests in flight are drained (up to the timeout) and the connections closed.
 */
export async function runLoop({ conns, makeReq, onReply, pids, warmupMs, durationMs, timeoutMs, stopSignal = null, onWindowStart = null, onWindowEnd = null }) {
	const c = conns.length;
	let lat = new Float64Array(1 << 16);
	let nlat = 0;
	let okInWindow = 0;
	let errInWindow = 0;
	let okTotal = 0;
	let errTotal = 0;
	let firstError = null;

	let tm0 = Infinity; // window start (set by the first snapshot)
	let tm1 = Infinity;
	let stopping = false;
	let inflight = 0;
	let idleResolve;
	const idle = new Promise((r) => (idleResolve = r));

	const fire = (i) => {
		const t0 = performance.now();
		inflight++;
		conns[i].send(makeReq(i), (err, status, body) => {
			const t1 = performance.now();
			inflight--;
			let ok = false;
			try {
				ok = onReply(i, err, status, body) === true;
				if (!ok) throw err ?? new Error(`rejected reply: HTTP ${status}: ${String(body).slice(0, 300)}`);
			} catch (e) {
				firstError ??= e.message;
			}
			if (ok) okTotal++;
			else errTotal++;
			if (t1 >= tm0 && t1 <= tm1) {
				if (ok) okInWindow++;
				else errInWindow++;
				if (ok && t0 >= tm0) {
					if (nlat === lat.length) {
						const bigger = new Float64Array(lat.length * 2);
						bigger.set(lat);
						lat = bigger;
					}
					lat[nlat++] = t1 - t0;
				}
			}
			next(i, ok ? 0 : 20); // back off a little after an error (e.g. connection refused)
		});
	};
	const next = (i, delayMs) => {
		if (stopping) {
			if (inflight === 0) idleResolve();
		} else if (delayMs) setTimeout(() => next(i, 0), delayMs);
		else fire(i);
	};

	const watchdog = setInterval(() => {
		const now = performance.now();
		for (const conn of conns) {
			if (conn.cb && now - conn.startedAt > timeoutMs) conn.abort(new Error(`timeout after ${timeoutMs} ms`));
		}
	}, 250);

	for (let i = 0; i < c; i++) fire(i);
	await sleep(warmupMs);
	const m0 = measureStart(pids);
	tm0 = m0.t;
	onWindowStart?.();
	await (stopSignal ?? sleep(durationMs)); // stopSignal: a promise that ends the window instead
	// close the window first, then snapshot, so no completion is counted after the CPU snapshot
	tm1 = performance.now();
	const cost = measureEnd(m0, pids, okInWindow);
	onWindowEnd?.();
	stopping = true;
	if (inflight === 0) idleResolve();
	let drainTimer;
	const drained = await Promise.race([
		idle.then(() => true),
		new Promise((r) => (drainTimer = setTimeout(() => r(false), timeoutMs + 1000))),
	]);
	clearTimeout(drainTimer);
	clearInterval(watchdog);
	for (const conn of conns) conn.close();
	const windowS = (tm1 - tm0) / 1000;
	return {
		concurrency: c,
		durationS: Math.round(windowS * 1000) / 1000,
		throughput: okInWindow / windowS,
		latencyMs: quantiles(lat.subarray(0, nlat)),
		errors: errInWindow,
		errorsTotal: errTotal,
		okTotal,
		firstError,
		drained,
		...cost,
	};
}

/**
 * Closed loop of increment(1): `keys.length` connections, connection i always sends to keys[i]
 * (all the same key for the hot actor). Every reply is checked; afterwards getCount per key must
 * equal the start value plus the number of acknowledged increments, and the acknowledged values
 * must be exactly base+1..final (distinct, contiguous); at concurrency 1 each must also be the
 * previous + 1.
 */
export async function closedLoop({ ep, keys, pids, warmupMs, durationMs, timeoutMs, clientKind, stopSignal = null }) {
	const c = keys.length;
	const distinct = [...new Set(keys)];
	const ctl = new RawConn(ep.host, ep.port);
	const base = new Map();
	for (const k of distinct) base.set(k, (await call(ctl, ep, "getCount", k, [], timeoutMs)).v);
	ctl.close(); // a fresh one afterwards: servers drop idle keep-alive connections after ~5 s

	const reqs = keys.map((k) => ep.req("increment", k, [1]));
	const outputs = new Map(distinct.map((k) => [k, []]));
	let seqViolations = 0;
	let seqFirst = null;
	const lastSeen = new Array(c).fill(null);
	const r = await runLoop({
		conns: makeConns(clientKind, ep.host, ep.port, c),
		makeReq: (i) => reqs[i],
		onReply: (i, err, status, body) => {
			const prev = lastSeen[i];
			lastSeen[i] = null; // a failed call may or may not have been applied
			if (err) throw err;
			const v = intOutput(status, body);
			outputs.get(keys[i]).push(v);
			if (c === 1 && prev !== null && v !== prev + 1) {
				seqViolations++;
				seqFirst ??= `c=1: expected ${prev + 1}, got ${v}`;
			}
			lastSeen[i] = v;
			return true;
		},
		pids,
		warmupMs,
		durationMs,
		timeoutMs,
		stopSignal,
	});

	// consistency check against the actor state
	const problems = [];
	if (!r.drained) problems.push("requests still in flight after the drain timeout");
	if (seqViolations) problems.push(`${seqViolations} replies not previous+1 at c=1`);
	await checkCounts(ep, distinct, outputs, base, r.errorsTotal, timeoutMs, problems);
	const { okTotal: _ok, drained: _d, ...rest } = r;
	return {
		...rest,
		actors: distinct.length,
		firstError: r.firstError ?? seqFirst,
		consistent: problems.length === 0,
		consistencyProblems: problems.slice(0, 5),
	};
}

/** http: hot actor at each concurrency, then (optionally) `many` actors at concurrency `many`. */
export async function httpScenario({ ep, tag, pids, concurrencies, many, warmupMs, durationMs, timeoutMs, clientKind, log, gateFn }) {
	const rows = [];
	const hot = `hot-${tag}`;
	for (const c of concurrencies) {
		await gateFn();
		const r = await closedLoop({ ep, keys: new Array(c).fill(hot), pids, warmupMs, durationMs, timeoutMs, clientKind });
		rows.push({ scenario: "http", variant: `hot actor c=${c}`, ...r });
		log(rows.at(-1));
	}
	if (many > 0) {
		await gateFn();
		const keys = Array.from({ length: many }, (_, i) => `many-${tag}-${i}`);
		// create the actors first (4 at a time) so the measurement sees warm actors only
		const conns = Array.from({ length: 4 }, () => new RawConn(ep.host, ep.port));
		let next = 0;
		let createErrors = 0;
		let createFirstError = null;
		const t0 = performance.now();
		await Promise.all(
			conns.map(async (conn) => {
				while (next < keys.length) {
					const key = keys[next++];
					for (let attempt = 1; ; attempt++) {
						try {
							await call(conn, ep, "getCount", key, [], Math.max(timeoutMs, 30000));
							break;
						} catch (e) {
							createErrors++;
							createFirstError ??= e.message;
							if (attempt >= 3) throw new Error(`creating ${key} failed 3 times: ${e.message}`);
						}
					}
				}
			}),
		).finally(() => conns.forEach((conn) => conn.close()));
		if (createErrors) {
			log({ scenario: "note", variant: `creating ${many} actors (4 at a time)`, ms: performance.now() - t0, errors: createErrors, firstError: createFirstError });
		}
		const r = await closedLoop({ ep, keys, pids, warmupMs, durationMs, timeoutMs, clientKind });
		rows.push({ scenario: "http", variant: `${many} actors c=${many}`, ...r });
		log(rows.at(-1));
	}
	return rows;
}
