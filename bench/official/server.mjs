// The bench's registry served by the official npm `rivetkit` runtime: `counter` (as
// examples/counter.py), the lifecycle actors `sleepy` and `ticker` and the queue consumer `worker`
// (as bench/actors.py).
// `registry.start()` runs the runtime as an envoy of a local `rivet-engine` (npm @rivetkit/engine-cli),
// which the runtime spawns itself on RIVET_RUN_ENGINE_PORT (guard), +1 (api-peer), +10 (metrics).
// All client traffic goes through the engine's gateway; this process listens on no port itself.
import { actor, queue, setup } from "rivetkit";

// BENCH_DURABLE=1 (target official-durable): `increment` answers only once its state is saved
// (`saveState({ immediate: true })` waits for the engine's commit), which is our runtime's
// default durability; otherwise the runtime saves at most once per second and answers at once.
const DURABLE = process.env.BENCH_DURABLE === "1";

const counter = actor({
	state: { count: 0 },
	actions: {
		// same shape as examples/counter.py: add, tell subscribers, return the new count
		increment: DURABLE
			? async (c, amount) => {
					c.state.count += amount;
					c.broadcast("count", c.state.count);
					const count = c.state.count;
					await c.saveState({ immediate: true });
					return count;
				}
			: (c, amount) => {
					c.state.count += amount;
					c.broadcast("count", c.state.count);
					return c.state.count;
				},
		getCount: (c) => c.state.count,
		noop: (_c, x) => x,
	},
});

// Only `nap` (or a shutdown) puts the lifecycle actors to sleep during a bench run.
const NO_IDLE_SLEEP = { sleepTimeout: 3_600_000 };

// wake / mem scenarios: `hit` counts durably (state) and per generation (vars are ephemeral), so
// a reply [count, 1] proves the call ran on a freshly woken instance; `nap` sleeps after the call.
const sleepy = actor({
	state: { count: 0 },
	vars: { calls: 0 },
	options: NO_IDLE_SLEEP,
	actions: {
		hit: (c) => {
			c.state.count += 1;
			c.vars.calls += 1;
			return [c.state.count, c.vars.calls];
		},
		nap: (c) => {
			c.sleep();
			return c.state.count;
		},
		noop: (_c, x) => x,
	},
});

// schedule scenario: `plan` schedules n one-shots (`schedule.after` takes milliseconds here, seconds
// in Python); each `tick` records [j, wall ms now - scheduledAt, firedAt - scheduledAt]. The
// runtime appends the ScheduledFireInfo to the arguments of a scheduled action.
const ticker = actor({
	state: { late: [] },
	options: NO_IDLE_SLEEP,
	actions: {
		plan: async (c, n, firstS, gapS, nap = false) => {
			c.state.late = [];
			for (let j = 0; j < n; j++) {
				await c.schedule.after(Math.round((firstS + j * gapS) * 1000), "tick", j, nap);
			}
			if (nap) c.sleep();
			return n;
		},
		tick: (c, j, nap, fire) => {
			const now = Date.now();
			if (!fire) return;
			c.state.late.push([j, now - fire.scheduledAt, fire.firedAt - fire.scheduledAt]);
			if (nap) c.sleep();
		},
		results: (c) => c.state.late,
		noop: (_c, x) => x,
	},
});

// queue scenario: the run loop consumes `jobs` (completable) one message at a time and completes
// each {s: sender, n: seq} with [n, done]; `stats` returns [done, per-sender order violations].
// maxQueueSize raised as in bench/actors.py (the enqueue-only variant outruns the one consumer).
const worker = actor({
	vars: { done: 0, last: {}, disorder: 0 },
	queues: { jobs: queue() },
	options: { ...NO_IDLE_SLEEP, maxQueueSize: 1_000_000 },
	run: async (c) => {
		const v = c.vars;
		for await (const m of c.queue.iter({ names: ["jobs"], completable: true })) {
			const { s, n } = m.body;
			if (n <= (v.last[s] ?? -1)) v.disorder += 1;
			v.last[s] = n;
			v.done += 1;
			await m.complete([n, v.done]);
		}
	},
	actions: {
		stats: (c) => [c.vars.done, c.vars.disorder],
		noop: (_c, x) => x,
	},
});

const registry = setup({ use: { counter, sleepy, ticker, worker } });
registry.start();

// Print a marker so the harness can tell the runtime booted (readiness is still checked over HTTP).
console.log(`bench-official-runtime pid=${process.pid}`);
