// WebSocket scenarios: `ws` (actions over the /connect socket: closed loop on one connection with 1
// and with N in flight, on M connections to M actors, and the time to Init for new actors) and
// `fanout` (one actor, S subscribers of `count`, one more connection calls `increment`: time until
// the first and until all subscribers got the Event). Replies and events are checked; CPU accounting
// as in scenarios.mjs.
import { RawConn } from "./http.mjs";
import { call, checkCounts, measureEnd, measureStart, quantiles } from "./scenarios.mjs";
import { connectMany, RivetWs } from "./ws.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Closed loop over already-open connections: each keeps `inflight` increment(1) requests in flight
 * for warmupMs + durationMs; only the last durationMs are measured. Afterwards getCount (over HTTP)
 * per actor must have moved by exactly the number of acknowledged increments and the acknowledged
 * values must be distinct and inside (start, end]; with one connection and one in flight each reply
 * must be the previous + 1.
 */
export async function wsClosedLoop({ ep, conns, inflight, pids, warmupMs, durationMs, timeoutMs }) {
	const n = conns.length;
	const keys = conns.map((c) => c.key);
	const distinct = [...new Set(keys)];
	const ctl = new RawConn(ep.host, ep.port);
	const base = new Map();
	for (const k of distinct) base.set(k, (await call(ctl, ep, "getCount", k, [], timeoutMs)).v);
	ctl.close(); // a fresh one afterwards: servers drop idle keep-alive connections after ~5 s

	const outputs = new Map(distinct.map((k) => [k, []]));
	let lat = new Float64Array(1 << 16);
	let nlat = 0;
	let okInWindow = 0;
	let errInWindow = 0;
	let errTotal = 0;
	let firstError = null;
	let seqViolations = 0;
	const strictSeq = n === 1 && inflight === 1;
	let lastSeen = null;
	const lastProgress = new Float64Array(n).fill(performance.now());
	let tm0 = Infinity;
	let tm1 = Infinity;
	let stopping = false;
	let pending = 0;
	let idleResolve;
	const idle = new Promise((r) => (idleResolve = r));

	const fire = (i) => {
		const conn = conns[i];
		pending++;
		const t0 = conn.action("increment", "[1]", (err, out, t1) => {
			pending--;
			lastProgress[i] = t1;
			let ok = false;
			if (err) {
				errTotal++;
				firstError ??= err.message;
				lastSeen = null;
			} else if (!Number.isInteger(out)) {
				errTotal++;
				firstError ??= `output is not an int: ${JSON.stringify(out)?.slice(0, 200)}`;
				lastSeen = null;
			} else {
				outputs.get(keys[i]).push(out);
				if (strictSeq && lastSeen !== null && out !== lastSeen + 1) {
					seqViolations++;
					firstError ??= `1 conn, 1 in flight: expected ${lastSeen + 1}, got ${out}`;
				}
				lastSeen = out;
				ok = true;
			}
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
			if (stopping || conn.closed) {
				if (pending === 0) idleResolve();
			} else fire(i);
		});
	};

	// a connection that made no progress for timeoutMs while it had requests in flight is failed
	// (its requests count as errors) and not used again
	const watchdog = setInterval(() => {
		const now = performance.now();
		for (let i = 0; i < n; i++) {
			const c = conns[i];
			if (!c.closed && c.pending.size && now - lastProgress[i] > timeoutMs) c._fail(new Error(`timeout after ${timeoutMs} ms`));
		}
	}, 250);

	const tStart = performance.now();
	lastProgress.fill(tStart);
	for (let i = 0; i < n; i++) for (let j = 0; j < inflight; j++) fire(i);
	await sleep(warmupMs);
	const m0 = measureStart(pids);
	tm0 = m0.t;
	await sleep(durationMs);
	tm1 = performance.now();
	const cost = measureEnd(m0, pids, okInWindow);
	stopping = true;
	if (pending === 0) idleResolve();
	let drainTimer;
	const drained = await Promise.race([
		idle.then(() => true),
		new Promise((r) => (drainTimer = setTimeout(() => r(false), timeoutMs + 1000))),
	]);
	clearTimeout(drainTimer);
	clearInterval(watchdog);

	const problems = [];
	if (!drained) problems.push("requests still in flight after the drain timeout");
	if (seqViolations) problems.push(`${seqViolations} replies not previous+1`);
	const dead = conns.filter((c) => c.closed).length;
	if (dead) problems.push(`${dead} connections closed during the run (${conns.find((c) => c.closed)?.closeInfo?.code ?? "?"})`);
	await checkCounts(ep, distinct, outputs, base, errTotal, timeoutMs, problems);
	const windowS = (tm1 - tm0) / 1000;
	return {
		concurrency: n * inflight,
		connections: n,
		inflight,
		actors: distinct.length,
		durationS: Math.round(windowS * 1000) / 1000,
		throughput: okInWindow / windowS,
		latencyMs: quantiles(lat.subarray(0, nlat)),
		errors: errInWindow,
		errorsTotal: errTotal,
		firstError,
		consistent: problems.length === 0,
		consistencyProblems: problems.slice(0, 5),
		...cost,
	};
}

/**
 * ws: one connection to one actor with each of `pipeline` (e.g. 1, 32) requests in flight; then
 * `many` new actors connected `connConc` at a time (time to Init), then a closed loop over those
 * `many` connections with one request in flight each.
 */
export async function wsScenario({ ep, tag, pids, pipeline, many, connConc = 4, warmupMs, durationMs, timeoutMs, log, gateFn }) {
	const rows = [];
	// A new connection for each variant: rivet-engine's gateway rate-limits the messages each
	// client WebSocket sends (a leaky bucket: `pegboard.gateway_websocket_rate_limit_requests`,
	// 2,000 of burst, then one every `gateway_websocket_rate_limit_drip_rate_ms`, 10 ms), so on a
	// shared socket a variant inherits what the one before used up: a fast target would start the
	// 32-in-flight loop already throttled to ~90 messages/s where a slow one would not. For the
	// same reason the warm-up runs on a socket of its own: the measured socket starts with the
	// whole burst for every target (a faster warm-up would otherwise leave less of it).
	const measuredWarmupMs = Math.min(warmupMs, 200); // fills the pipeline, nothing more
	for (const k of pipeline) {
		await gateFn();
		if (warmupMs > 0) {
			const warm = await connectMany(ep.host, ep.port, [`wshot-${tag}`], { timeoutMs, retries: 2 });
			try {
				await wsClosedLoop({ ep, conns: warm.conns, inflight: k, pids, warmupMs: 0, durationMs: warmupMs, timeoutMs });
			} finally {
				warm.conns.forEach((c) => c?.close());
			}
		}
		const { conns } = await connectMany(ep.host, ep.port, [`wshot-${tag}`], { timeoutMs, retries: 2 });
		try {
			const r = await wsClosedLoop({ ep, conns, inflight: k, pids, warmupMs: measuredWarmupMs, durationMs, timeoutMs });
			rows.push({ scenario: "ws", variant: `1 conn, ${k} in flight`, ...r });
			log(rows.at(-1));
		} finally {
			conns.forEach((c) => c?.close());
		}
	}
	if (many > 0) {
		await gateFn();
		const keys = Array.from({ length: many }, (_, i) => `wsmany-${tag}-${i}`);
		const m0 = measureStart(pids);
		let res;
		try {
			res = await connectMany(ep.host, ep.port, keys, { conc: connConc, timeoutMs, retries: 2 });
		} catch (e) {
			rows.push({ scenario: "ws", variant: `connect ${many} new actors, ${connConc} at a time (to Init)`, errors: 1, firstError: e.message, consistent: false, consistencyProblems: [e.message] });
			log(rows.at(-1));
			return rows;
		}
		const cost = measureEnd(m0, pids, res.ms.length);
		const { conns } = res;
		try {
			const ids = new Set(conns.map((c) => c.connectionId));
			const problems = [];
			if (conns.some((c) => typeof c.actorId !== "string" || !c.actorId || typeof c.connectionId !== "string" || !c.connectionId))
				problems.push("Init without actorId/connectionId strings");
			if (ids.size !== conns.length) problems.push(`${conns.length - ids.size} duplicate connectionIds`);
			if (new Set(conns.map((c) => c.actorId)).size !== conns.length) problems.push("two keys got the same actorId");
			rows.push({
				scenario: "ws",
				variant: `connect ${many} new actors, ${connConc} at a time (to Init)`,
				concurrency: connConc,
				latencyMs: quantiles(res.ms),
				errors: res.errors.length,
				firstError: res.errors[0] ?? null,
				consistent: problems.length === 0,
				consistencyProblems: problems,
				...cost,
			});
			log(rows.at(-1));
			const r = await wsClosedLoop({ ep, conns, inflight: 1, pids, warmupMs, durationMs, timeoutMs });
			rows.push({ scenario: "ws", variant: `${many} conns to ${many} actors, 1 in flight each`, ...r });
			log(rows.at(-1));
		} finally {
			conns.forEach((c) => c?.close());
		}
	}
	return rows;
}

/**
 * fanout: `subs` connections to one actor subscribe to `count`; one more connection calls
 * increment(1) `rounds` times, one round at a time. Per round: time from sending the request until
 * the first subscriber and until every subscriber got Event{name:"count", args:[n]} with the value
 * the action returned, and the trigger's own round trip. A round ends when the response and all
 * events are in (or after the round timeout: missing events count as errors). Before measuring,
 * rounds are repeated until one reaches every subscriber (subscriptions are not acknowledged), then
 * `warmRounds` more.
 */
export async function fanoutScenario({ ep, tag, pids, subs, rounds, warmRounds = 20, connConc = 10, timeoutMs, log, gateFn }) {
	await gateFn();
	const key = `fan-${tag}`;
	const roundTimeoutMs = Math.min(timeoutMs, 10000);
	const got = new Uint8Array(subs);
	let expected = -1;
	let nGot = 0;
	let tFirst = 0;
	let tAll = 0;
	let wrongValue = 0; // events whose value is not the current round's
	let dupEvents = 0;
	let roundDone = null; // resolve of the current round
	let respDone = false;
	const onEvent = (i, name, args, t) => {
		if (name !== "count") return;
		const v = Array.isArray(args) ? args[0] : undefined;
		if (v !== expected) {
			wrongValue++;
			return;
		}
		if (got[i]) {
			dupEvents++;
			return;
		}
		got[i] = 1;
		if (nGot++ === 0) tFirst = t;
		if (nGot === subs) {
			tAll = t;
			if (respDone && roundDone) roundDone();
		}
	};
	// create the actor with the first subscriber, then the rest connConc at a time
	const first = await connectMany(ep.host, ep.port, [key], { timeoutMs, retries: 2, onEvent });
	let rest;
	try {
		rest = await connectMany(ep.host, ep.port, new Array(subs - 1).fill(key), {
			conc: connConc,
			timeoutMs,
			retries: 2,
			onEvent: (i, n, a, t) => onEvent(i + 1, n, a, t),
		});
	} catch (e) {
		first.conns[0].close();
		throw e;
	}
	const subConns = [first.conns[0], ...rest.conns];
	let trigger;
	const rows = [];
	try {
		for (const c of subConns) c.subscribe("count");
		trigger = new RivetWs(ep.host, ep.port, key, { timeoutMs });
		await trigger.ready;

		// one round; resolves {first, all, rt, missing} (ms relative to the send; null when missing)
		const round = (limitMs = roundTimeoutMs) =>
			new Promise((resolve) => {
				got.fill(0);
				nGot = 0;
				tAll = 0;
				respDone = false;
				let tResp = 0;
				let respErr = null;
				let timer;
				const t0 = performance.now();
				roundDone = () => {
					clearTimeout(timer);
					roundDone = null;
					resolve({
						first: nGot ? tFirst - t0 : null,
						all: nGot === subs ? tAll - t0 : null,
						rt: respDone && !respErr ? tResp - t0 : null,
						missing: subs - nGot,
						respErr,
					});
				};
				timer = setTimeout(() => roundDone?.(), limitMs);
				trigger.action("increment", "[1]", (err, out, t1) => {
					respDone = true;
					tResp = t1;
					if (err) respErr = err.message;
					else if (out !== expected) respErr = `increment returned ${out}, expected ${expected}`;
					if (nGot === subs || err) roundDone?.();
				});
			});

		// expected values: the count only moves through this trigger
		const ctl = new RawConn(ep.host, ep.port);
		let count;
		try {
			count = (await call(ctl, ep, "getCount", key, [], timeoutMs)).v;
		} finally {
			ctl.close();
		}
		// warm-up: until one round reaches everyone (at most 30 s), then warmRounds more
		const tw = performance.now();
		let full = false;
		while (!full) {
			if (performance.now() - tw > 30000 || trigger.closed) throw new Error(`fanout: no round reached all ${subs} subscribers within 30 s of warm-up`);
			expected = ++count;
			const r = await round(2000);
			if (r.respErr) throw new Error(`fanout warm-up: ${r.respErr}`);
			full = r.missing === 0;
		}
		for (let i = 0; i < warmRounds; i++) {
			expected = ++count;
			await round();
		}
		wrongValue = 0;
		dupEvents = 0;
		const firstL = [];
		const allL = [];
		const rtL = [];
		let missingRounds = 0;
		let missingEvents = 0;
		let respErrors = 0;
		let firstError = null;
		let ran = 0;
		const m0 = measureStart(pids);
		for (let i = 0; i < rounds; i++) {
			expected = ++count;
			const r = await round();
			ran++;
			if (r.first !== null) firstL.push(r.first);
			if (r.all !== null) allL.push(r.all);
			else {
				missingRounds++;
				missingEvents += r.missing;
				firstError ??= `round ${i}: ${r.missing} of ${subs} subscribers got no event within ${roundTimeoutMs} ms`;
			}
			if (r.rt !== null) rtL.push(r.rt);
			else {
				respErrors++;
				firstError ??= `round ${i}: ${r.respErr ?? "no response"}`;
				if (trigger.closed) break;
			}
		}
		const cost = measureEnd(m0, pids, ran);
		const problems = [];
		if (wrongValue) problems.push(`${wrongValue} events with a value other than the round's count`);
		if (dupEvents) problems.push(`${dupEvents} duplicate events`);
		if (respErrors) problems.push(`${respErrors} increments failed or returned an unexpected count`);
		const closedSubs = subConns.filter((c) => c.closed).length;
		if (closedSubs) problems.push(`${closedSubs} subscribers disconnected`);
		const common = { subscribers: subs, rounds: ran, consistent: problems.length === 0, consistencyProblems: problems };
		rows.push({ scenario: "fanout", variant: `${subs} subscribers: send -> all received`, ...common, latencyMs: quantiles(allL), errors: missingRounds, missingEvents, firstError, ...cost });
		log(rows.at(-1));
		rows.push({ scenario: "fanout", variant: `${subs} subscribers: send -> first received`, ...common, latencyMs: quantiles(firstL), errors: ran - firstL.length });
		log(rows.at(-1));
		rows.push({ scenario: "fanout", variant: `${subs} subscribers: trigger action round trip`, ...common, latencyMs: quantiles(rtL), errors: respErrors });
		log(rows.at(-1));
	} finally {
		trigger?.close();
		subConns.forEach((c) => c?.close());
	}
	return rows;
}
