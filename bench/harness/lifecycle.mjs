// Lifecycle scenarios (issue 4): `wake` (latency of the first action on a sleeping actor),
// `schedule` (lateness of durable one-shot schedules, idle and under HTTP load) and `mem`
// (server RSS per awake actor over HTTP). They use the `sleepy` and `ticker` actors of
// bench/actors.py (ours) and bench/official/server.mjs (official).
import { buildGet, RawConn, request } from "./http.mjs";
import { closedLoop, measureEnd, measureStart, quantiles } from "./scenarios.mjs";
import fs from "node:fs";
import { cpuDelta, cpuSnapshot, rssMiB } from "./procs.mjs";

const fsRead = (p) => fs.readFileSync(p, "latin1");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** POST action on actor `name` / [key]; returns { v: parsed output, ms } or throws. */
export async function act(conn, ep, name, action, key, args, timeoutMs) {
	const r = await request(conn, ep.req(action, key, args, name), timeoutMs);
	if (r.status !== 200) throw new Error(`${name}.${action}: HTTP ${r.status}: ${String(r.body).slice(0, 300)}`);
	let v;
	try {
		v = JSON.parse(r.body).output;
	} catch {
		throw new Error(`${name}.${action}: bad JSON: ${String(r.body).slice(0, 300)}`);
	}
	return { v, ms: r.ms };
}

/** The engine's actor object for name / [key] from `GET /actors` (does not wake the actor). */
async function actorInfo(conn, ep, name, key, timeoutMs) {
	const path = `/actors?namespace=default&name=${encodeURIComponent(name)}&key=${encodeURIComponent(key)}`;
	const r = await request(conn, buildGet(ep.host, ep.port, path), timeoutMs);
	if (r.status !== 200) throw new Error(`GET /actors: HTTP ${r.status}: ${String(r.body).slice(0, 300)}`);
	const actors = JSON.parse(r.body).actors ?? [];
	return actors[0] ?? null;
}

/** Poll `GET /actors` until the actor reports `sleep_ts` (asleep); returns ms waited. */
async function waitAsleep(conn, ep, name, key, pollMs, maxMs, timeoutMs) {
	const t0 = performance.now();
	for (;;) {
		const a = await actorInfo(conn, ep, name, key, timeoutMs);
		if (a && a.sleep_ts !== null && a.sleep_ts !== undefined) return performance.now() - t0;
		if (performance.now() - t0 > maxMs) throw new Error(`${name} ${key} not asleep after ${maxMs} ms: ${JSON.stringify(a)}`);
		await sleep(pollMs);
	}
}

const same = (a, b) => Array.isArray(a) && a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * wake: for each of `n` new keys of `sleepy`, one after the other on one keep-alive connection:
 * hit (cold: creates the actor) -> hit (hot) -> nap (sleeps after replying) -> poll GET /actors
 * until sleep_ts is set -> wait `settleMs` -> hit (wake: must answer [3, 1], i.e. the state
 * survived and this is the first call of a new generation). Server CPU is summed over the wake
 * calls only.
 */
export async function wakeScenario({ ep, tag, pids, n, pollMs, settleMs, timeoutMs, log }) {
	const conn = new RawConn(ep.host, ep.port);
	const poll = new RawConn(ep.host, ep.port);
	const lat = { cold: [], hot: [], wake: [], asleep: [] };
	let errors = 0;
	let firstError = null;
	let wrong = 0;
	let wakeCpuUs = 0;
	const bad = (what) => {
		wrong++;
		firstError ??= what;
	};
	try {
		await act(conn, ep, "sleepy", "noop", `wake-${tag}-warmconn`, [0], timeoutMs);
		const m0 = measureStart(pids);
		for (let i = 0; i < n; i++) {
			const key = `wake-${tag}-${i}`;
			try {
				let r = await act(conn, ep, "sleepy", "hit", key, [], timeoutMs);
				if (!same(r.v, [1, 1])) bad(`cold hit returned ${JSON.stringify(r.v)}, expected [1,1]`);
				lat.cold.push(r.ms);
				r = await act(conn, ep, "sleepy", "hit", key, [], timeoutMs);
				if (!same(r.v, [2, 2])) bad(`hot hit returned ${JSON.stringify(r.v)}, expected [2,2]`);
				lat.hot.push(r.ms);
				r = await act(conn, ep, "sleepy", "nap", key, [], timeoutMs);
				if (r.v !== 2) bad(`nap returned ${JSON.stringify(r.v)}, expected 2`);
				lat.asleep.push(await waitAsleep(poll, ep, "sleepy", key, pollMs, 60000, timeoutMs));
				if (settleMs) await sleep(settleMs);
				const c0 = cpuSnapshot(pids);
				r = await act(conn, ep, "sleepy", "hit", key, [], timeoutMs);
				wakeCpuUs += cpuDelta(c0, cpuSnapshot(pids)).us;
				if (!same(r.v, [3, 1])) bad(`wake hit returned ${JSON.stringify(r.v)}, expected [3,1] (state kept, new generation)`);
				lat.wake.push(r.ms);
			} catch (e) {
				errors++;
				firstError ??= e.message;
			}
		}
		const total = measureEnd(m0, pids, null);
		const common = { errors, firstError, consistent: wrong === 0 };
		log({ scenario: "wake", variant: "new key -> first hit (cold start)", latencyMs: quantiles(lat.cold), ...common });
		log({ scenario: "wake", variant: "awake actor -> hit (hot)", latencyMs: quantiles(lat.hot), ...common });
		log({ scenario: "wake", variant: "nap reply -> sleep_ts visible", latencyMs: quantiles(lat.asleep), ...common });
		log({
			scenario: "wake",
			variant: "asleep actor -> hit (wake)",
			latencyMs: quantiles(lat.wake),
			...common,
			serverCpuUsPerOp: lat.wake.length ? wakeCpuUs / lat.wake.length : null,
			serverRssMiB: total.serverRssMiB,
			otherCpuPctCore: total.otherCpuPctCore,
		});
	} finally {
		conn.close();
		poll.close();
	}
}

/** Run `fn(conn, item, index)` for every item, `parallel` at a time, each worker on its own connection. */
async function eachParallel(ep, items, parallel, fn) {
	const conns = Array.from({ length: Math.min(parallel, items.length) }, () => new RawConn(ep.host, ep.port));
	let next = 0;
	try {
		await Promise.all(
			conns.map(async (conn) => {
				while (next < items.length) {
					const i = next++;
					await fn(conn, items[i], i);
				}
			}),
		);
	} finally {
		conns.forEach((c) => c.close());
	}
}

/**
 * Call `action(...args)` once on each key of actor `name`, `parallel` at a time, up to `attempts`
 * tries each (the official engine sometimes answers 504 after 15 s). Failed attempts are counted;
 * a key that fails every attempt throws, or with `soft` leaves its output undefined.
 */
export async function callEach(ep, name, keys, action, argsFor, parallel, timeoutMs, { attempts = 3, soft = false } = {}) {
	const outputs = new Array(keys.length);
	let errors = 0;
	let firstError = null;
	await eachParallel(ep, keys, parallel, async (conn, key, i) => {
		for (let attempt = 1; ; attempt++) {
			try {
				outputs[i] = (await act(conn, ep, name, action, key, argsFor(i), Math.max(timeoutMs, 30000))).v;
				return;
			} catch (e) {
				errors++;
				firstError ??= e.message;
				if (attempt >= attempts) {
					if (soft) return;
					throw new Error(`${name} ${key} ${action} failed ${attempts} times: ${e.message}`);
				}
			}
		}
	});
	return { outputs, errors, firstError };
}

/**
 * schedule: `actors` ticker actors each plan `events / actors` one-shots with
 * `schedule.after(lead + a * gap / actors + j * gap)` (actor a, event j), so that overall one event
 * is due every `spread / events` seconds. Each fired `tick` records its lateness (wall time when the
 * action runs - scheduled_at); after the last due time the harness reads the records back
 * (`results`, polling up to `tailMs` for stragglers).
 * Variants: `idle` (nothing else runs), `load` (a closed loop of increment(1) on `loadConns`
 * counter actors, one connection each, from 1 s before the planning until every record is in),
 * `nap` / `nap-load` (the actors sleep after planning and after every tick, so each event first
 * has to wake its actor).
 */
export async function scheduleScenario({ ep, tag, pids, events, actors, spreadS, leadS, tailMs, loadConns, variants, timeoutMs, clientKind, log, gateFn }) {
	const perActor = Math.ceil(events / actors);
	const gapS = spreadS / perActor;
	for (const variant of variants) {
		await gateFn();
		const nap = variant.startsWith("nap");
		const withLoad = variant.endsWith("load");
		const keys = Array.from({ length: actors }, (_, a) => `tick-${tag}-${variant}-${a}`);
		let errors = 0;
		let firstError = null;
		const problems = [];
		await callEach(ep, "ticker", keys, "noop", () => [0], 4, timeoutMs, { attempts: 5 });
		let loadP = null;
		let release = null;
		if (withLoad) {
			const loadKeys = Array.from({ length: loadConns }, (_, i) => `schedload-${tag}-${variant}-${i}`);
			await callEach(ep, "counter", loadKeys, "getCount", () => [], 4, timeoutMs, { attempts: 5 });
			const stop = new Promise((r) => (release = r));
			loadP = closedLoop({ ep, keys: loadKeys, pids, warmupMs: 1000, durationMs: 0, timeoutMs, clientKind, stopSignal: stop });
			await sleep(1000);
		}
		const records = new Array(actors).fill(null);
		const unreadable = new Set();
		let m0;
		let cost;
		let planMs = null;
		let planErr = null;
		let load = null;
		try {
			m0 = measureStart(pids);
			const tPlan0 = performance.now();
			try {
				const r = await callEach(ep, "ticker", keys, "plan", (a) => [perActor, leadS + (a * gapS) / actors, gapS, nap], 4, timeoutMs);
				errors += r.errors;
				firstError ??= r.firstError;
			} catch (e) {
				planErr = e;
			}
			planMs = performance.now() - tPlan0;
			// every event is due by (end of planning) + lead + spread
			const lastDue = tPlan0 + planMs + (leadS + spreadS) * 1000;
			await sleep(Math.max(0, lastDue - performance.now()) + 200);
			const deadline = performance.now() + tailMs;
			while (!planErr) {
				const missing = keys.map((_, a) => a).filter((a) => !records[a] || records[a].length < perActor);
				if (!missing.length) break;
				const r = await callEach(ep, "ticker", missing.map((a) => keys[a]), "results", () => [], 4, timeoutMs, { attempts: 1, soft: true });
				missing.forEach((a, i) => {
					if (r.outputs[i] === undefined) unreadable.add(a);
					else {
						records[a] = r.outputs[i];
						unreadable.delete(a);
					}
				});
				firstError ??= r.firstError;
				if (performance.now() > deadline) break;
				if (keys.some((_, a) => !records[a] || records[a].length < perActor)) await sleep(250);
			}
			cost = measureEnd(m0, pids, null);
		} finally {
			if (release) release();
			if (loadP) load = await loadP;
		}
		const late = [];
		const fireLate = [];
		let fired = 0;
		for (let a = 0; a < actors; a++) {
			const seen = new Set();
			for (const [j, ms, firedMinusSched] of records[a] ?? []) {
				if (seen.has(j)) problems.push(`${keys[a]}: event ${j} ran twice`);
				seen.add(j);
				late.push(ms);
				fireLate.push(firedMinusSched);
				fired++;
			}
		}
		const missingEvents = perActor * actors - fired;
		if (planErr) {
			errors++;
			firstError ??= planErr.message;
		}
		if (unreadable.size) {
			errors += unreadable.size;
			problems.push(`results of ${unreadable.size} actors could not be read (${firstError})`);
		}
		if (missingEvents > 0) problems.push(`${missingEvents} of ${perActor * actors} events had not run (or could not be read) ${tailMs} ms after the last due time`);
		log({
			scenario: "schedule",
			variant: `${perActor * actors} events over ${spreadS} s, ${actors} actors, ${variant}${withLoad ? ` (${loadConns} conns)` : ""}: run - scheduled_at`,
			latencyMs: quantiles(late),
			firedMinusScheduledMs: quantiles(fireLate),
			// how many events ran more than 10 / 50 ms after they were due
			lateOver10ms: late.filter((x) => x > 10).length,
			lateOver50ms: late.filter((x) => x > 50).length,
			planMs,
			events: perActor * actors,
			fired,
			errors, // failed requests (plan, results); events that did not run: `events` - `fired`
			firstError,
			consistent: problems.length === 0 && !planErr,
			consistencyProblems: problems.slice(0, 5),
			loadThroughput: load?.throughput ?? null,
			loadLatencyMs: load?.latencyMs ?? null,
			loadErrors: load?.errorsTotal ?? null,
			loadConsistent: load?.consistent ?? null,
			throughput: load?.throughput,
			serverCpuPctCore: cost?.serverCpuPctCore,
			otherCpuPctCore: cost?.otherCpuPctCore,
			serverRssMiB: cost?.serverRssMiB,
		});
	}
}

/**
 * mem: server RSS per awake actor over HTTP. `n` new `sleepy` actors are woken (hit once,
 * `parallel` at a time); RSS of the server process(es) before and after (each after `settleMs`
 * idle), divided by n. Then every one naps (sleeps) and, once a sample of them reports sleep_ts,
 * RSS again.
 */
export async function memScenario({ ep, tag, pids, n, parallel, settleMs, timeoutMs, log }) {
	const keys = Array.from({ length: n }, (_, i) => `mem-${tag}-${i}`);
	await sleep(settleMs);
	const rss0 = rssMiB(pids);
	const byProc0 = rssByComm(pids);
	const t0 = performance.now();
	const woke = await callEach(ep, "sleepy", keys, "hit", () => [], parallel, timeoutMs, { attempts: 5 });
	const wakeMs = performance.now() - t0;
	const bad = woke.outputs.filter((v) => !same(v, [1, 1])).length;
	await sleep(settleMs);
	const rss1 = rssMiB(pids);
	const byProc1 = rssByComm(pids);
	// still awake? (nothing should have slept: idle sleep is an hour)
	const probe = new RawConn(ep.host, ep.port);
	let asleepEarly = 0;
	try {
		for (const k of [keys[0], keys[Math.floor(n / 2)], keys[n - 1]]) {
			const a = await actorInfo(probe, ep, "sleepy", k, timeoutMs);
			if (!a || (a.sleep_ts ?? null) !== null) asleepEarly++;
		}
	} finally {
		probe.close();
	}
	const napped = await callEach(ep, "sleepy", keys, "nap", () => [], parallel, timeoutMs, { attempts: 5 });
	const poll = new RawConn(ep.host, ep.port);
	try {
		for (const k of [keys[0], keys[Math.floor(n / 2)], keys[n - 1]]) await waitAsleep(poll, ep, "sleepy", k, 20, 120000, timeoutMs);
	} finally {
		poll.close();
	}
	await sleep(settleMs);
	const rss2 = rssMiB(pids);
	const byProc2 = rssByComm(pids);
	const perProc = (a, b) => Object.fromEntries(Object.keys(b).map((c) => [c, Math.round(((b[c] - (a[c] ?? 0)) * 1024 * 10) / n) / 10]));
	log({
		scenario: "mem",
		variant: `${n} sleepy actors woken over HTTP (${parallel} at a time): RSS KiB per awake actor`,
		actors: n,
		kibPerActor: ((rss1 - rss0) * 1024) / n,
		kibPerActorByProc: perProc(byProc0, byProc1),
		rssBeforeMiB: rss0,
		rssAwakeMiB: rss1,
		createMsPerActor: wakeMs / n,
		errors: woke.errors + napped.errors,
		firstError: woke.firstError ?? napped.firstError,
		consistent: bad === 0 && asleepEarly === 0,
		consistencyProblems: [...(bad ? [`${bad} first hits did not answer [1,1]`] : []), ...(asleepEarly ? [`${asleepEarly} of 3 probed actors were asleep before nap`] : [])],
		serverRssMiB: rss1,
	});
	log({
		scenario: "mem",
		variant: `the same ${n} actors after nap (asleep): RSS KiB per actor vs before waking`,
		actors: n,
		kibPerActor: ((rss2 - rss0) * 1024) / n,
		kibPerActorByProc: perProc(byProc0, byProc2),
		rssBeforeMiB: rss0,
		rssAsleepMiB: rss2,
		errors: 0,
		consistent: true,
		serverRssMiB: rss2,
	});
}

function rssByComm(pids) {
	const out = {};
	for (const pid of pids) {
		let comm = String(pid);
		try {
			comm = fsRead(`/proc/${pid}/comm`).trim();
		} catch {}
		out[comm] = (out[comm] ?? 0) + rssMiB([pid]);
	}
	return out;
}
