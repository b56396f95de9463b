// The `counter` registry of the benchmark, served by the official npm `rivetkit` runtime.
// `registry.start()` runs the runtime as an envoy of a local `rivet-engine` (npm @rivetkit/engine-cli),
// which the runtime spawns itself on RIVET_RUN_ENGINE_PORT (guard), +1 (api-peer), +10 (metrics).
// All client traffic goes through the engine's gateway; this process listens on no port itself.
import { actor, setup } from "rivetkit";

const counter = actor({
	state: { count: 0 },
	actions: {
		// same shape as examples/counter.py: add, tell subscribers, return the new count
		increment: (c, amount) => {
			c.state.count += amount;
			c.broadcast("count", c.state.count);
			return c.state.count;
		},
		getCount: (c) => c.state.count,
		noop: (_c, x) => x,
	},
});

const registry = setup({ use: { counter } });
registry.start();

// Print a marker so the harness can tell the runtime booted (readiness is still checked over HTTP).
console.log(`bench-official-runtime pid=${process.pid}`);
