#!/usr/bin/env node
// Bench orchestrator: for each repetition and each target, start a fresh server, run the
// scenarios against it, stop it; results go to OUT/results.jsonl and OUT/summary.md.
// Normally started through bench/run.sh (which installs node deps and cleans up leftovers).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { killAllSync, setPidFile, trackedPids, stopPids } from "./procs.mjs";
import { coldScenario, Endpoint, gate, httpScenario } from "./scenarios.mjs";
import { fanoutScenario, wsScenario } from "./wsscenarios.mjs";
import { memScenario, scheduleScenario, wakeScenario } from "./lifecycle.mjs";
import { queueScenario } from "./queue.mjs";
import { setWsClient } from "./ws.mjs";
import { makeTargets } from "./targets.mjs";
import { renderSummary } from "./report.mjs";

const benchDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const repoDir = path.resolve(benchDir, "..");

const HELP = `usage: bench/run.sh [options]

  --targets LIST       comma list of ours,official,asgi,official-nodelay,  (default ours,official,asgi)
                       ours-engine,ours-engine-nodelay (engine mode: our runtime on rivet-engine),
                       ours-engine-save1s (the same, counter saving state once per second as official),
                       official-durable (official, counter answering after its state commit as ours)
  --scenarios LIST     comma list of cold,http,ws,fanout,wake,schedule,mem,queue (default cold,http,ws,fanout)
                       (wake, schedule, mem: lifecycle; queue: issue 5; opt-in, not run against asgi)
  --reps N             repetitions, targets interleaved (order rotates)    (default 3)
  --duration S         measured seconds per http / ws measurement          (default 5)
  --warmup S           unmeasured seconds before each http / ws measurement (default 1)
  --concurrency LIST   hot-actor concurrencies                             (default 1,16,64)
  --many N             extra http variant: N actors, one connection each   (default 64, 0 = off)
  --cold-n N           new keys in the cold scenario                        (default 50)
  --ws-inflight LIST   ws: requests in flight on the single connection     (default 1,32)
  --ws-many N          ws: N connections to N new actors (connect + loop)  (default 64, 0 = off)
  --fanout-subs N      fanout: subscribers of the one actor                (default 100)
  --fanout-rounds N    fanout: measured increment rounds                   (default 200)
  --wake-n N           wake: actors, each cold -> hot -> nap -> asleep -> wake (default 100)
  --wake-poll MS       wake: GET /actors poll interval while waiting for sleep_ts (default 2)
  --wake-settle MS     wake: extra wait after sleep_ts is visible, before the timed call (default 0)
  --sched-events N     schedule: one-shot events per variant                (default 1000)
  --sched-actors N     schedule: ticker actors sharing them                 (default 10)
  --sched-spread S     schedule: seconds over which they are due            (default 10)
  --sched-lead S       schedule: seconds from planning to the first event   (default 2)
  --sched-tail S       schedule: max wait for stragglers after the last due (default 10)
  --sched-load N       schedule: load connections = counter actors          (default 32)
  --sched-variants L   schedule: idle,load,nap,nap-load                     (default idle,load,nap,nap-load)
  --mem-n N            mem: sleepy actors woken over HTTP                   (default 1000)
  --mem-parallel N     mem: of them at a time                               (default 4)
  --queue-concurrency L queue: senders to the one consumer actor           (default 1,16,64)
  --queue-modes LIST   queue: wait (send to completion), nowait (enqueue)  (default wait,nowait)
  --queue-drain S      queue: max wait for the consumer to drain a backlog (default 120)
  --queue-client KIND  queue: raw (default: HTTP, json) | official (npm rivetkit/client handle.send)
  --queue-encoding E   queue: encoding of --queue-client official: json|cbor|bare (default bare)
  --client KIND        raw (default) | node-http  (load-generator HTTP client, for cross-checks)
  --ws-client KIND     raw (default) | ws  (load-generator WebSocket client: own minimal one or npm ws)
  --timeout S          per-request timeout (engine gives up at 15 s itself) (default 30)
  --ready-timeout S    max wait for a server to answer after start          (default 120)
  --out DIR            output dir (default bench/out/<YYYY-MM-DD>[-N]/)
  --python PATH        python for ours + asgi (default <repo>/.venv/bin/python)
  --ours-app FILE      registry file for ours, relative to the repo         (default bench/actors.py:
                       examples/counter.py's counter + the lifecycle actors sleepy, ticker)
  --ours-arg ARG       extra argument for "python -m rivetkit serve" (repeatable)
  --keep-data          keep the servers' storage dirs under OUT/data/
  --engine-cpu-max M   engine targets: RIVET__RUNTIME__WORKER_CPU_MAX=M (millicores) for every engine;
                       the engine's workflow worker pulls fewer due workflows once its own CPU is above
                       70 % of M (default: all cores), and the rest wait up to 16 s: on 2 cores a busy
                       engine stalls actor creations (docs/engine.md). 64000 turns that off
  --engine-metrics     engine targets: save the engine's /metrics (port +10) to OUT/logs/ before
                       each stop (what the engine did during the run: commits, workflows...)
  --help
`;

function parseArgs(argv) {
	const o = {
		targets: ["ours", "official", "asgi"],
		scenarios: ["cold", "http", "ws", "fanout"],
		reps: 3,
		duration: 5,
		warmup: 1,
		concurrency: [1, 16, 64],
		many: 64,
		coldN: 50,
		wsInflight: [1, 32],
		wsMany: 64,
		fanoutSubs: 100,
		fanoutRounds: 200,
		wakeN: 100,
		wakePoll: 2,
		wakeSettle: 0,
		schedEvents: 1000,
		schedActors: 10,
		schedSpread: 10,
		schedLead: 2,
		schedTail: 10,
		schedLoad: 32,
		schedVariants: ["idle", "load", "nap", "nap-load"],
		memN: 1000,
		memParallel: 4,
		queueConcurrency: [1, 16, 64],
		queueModes: ["wait", "nowait"],
		queueDrain: 120,
		queueClient: "raw",
		queueEncoding: "bare",
		client: "raw",
		wsClient: "raw",
		timeout: 30,
		readyTimeout: 120,
		out: null,
		python: path.join(repoDir, ".venv", "bin", "python"),
		oursApp: "bench/actors.py",
		oursArgs: [],
		keepData: false,
		engineMetrics: false,
		engineCpuMax: null,
	};
	const list = (v) => v.split(",").map((s) => s.trim()).filter(Boolean);
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		const v = () => {
			if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
			return argv[++i];
		};
		switch (a) {
			case "--targets": o.targets = list(v()); break;
			case "--scenarios": o.scenarios = list(v()); break;
			case "--reps": o.reps = Number(v()); break;
			case "--duration": o.duration = Number(v()); break;
			case "--warmup": o.warmup = Number(v()); break;
			case "--concurrency": o.concurrency = list(v()).map(Number); break;
			case "--many": o.many = Number(v()); break;
			case "--cold-n": o.coldN = Number(v()); break;
			case "--ws-inflight": o.wsInflight = list(v()).map(Number); break;
			case "--ws-many": o.wsMany = Number(v()); break;
			case "--fanout-subs": o.fanoutSubs = Number(v()); break;
			case "--fanout-rounds": o.fanoutRounds = Number(v()); break;
			case "--wake-n": o.wakeN = Number(v()); break;
			case "--wake-poll": o.wakePoll = Number(v()); break;
			case "--wake-settle": o.wakeSettle = Number(v()); break;
			case "--sched-events": o.schedEvents = Number(v()); break;
			case "--sched-actors": o.schedActors = Number(v()); break;
			case "--sched-spread": o.schedSpread = Number(v()); break;
			case "--sched-lead": o.schedLead = Number(v()); break;
			case "--sched-tail": o.schedTail = Number(v()); break;
			case "--sched-load": o.schedLoad = Number(v()); break;
			case "--sched-variants": o.schedVariants = list(v()); break;
			case "--mem-n": o.memN = Number(v()); break;
			case "--mem-parallel": o.memParallel = Number(v()); break;
			case "--queue-concurrency": o.queueConcurrency = list(v()).map(Number); break;
			case "--queue-modes": o.queueModes = list(v()); break;
			case "--queue-drain": o.queueDrain = Number(v()); break;
			case "--queue-client": o.queueClient = v(); break;
			case "--queue-encoding": o.queueEncoding = v(); break;
			case "--client": o.client = v(); break;
			case "--ws-client": o.wsClient = v(); break;
			case "--timeout": o.timeout = Number(v()); break;
			case "--ready-timeout": o.readyTimeout = Number(v()); break;
			case "--out": o.out = path.resolve(v()); break;
			case "--python": o.python = path.resolve(v()); break;
			case "--ours-app": o.oursApp = v(); break;
			case "--ours-arg": o.oursArgs.push(v()); break;
			case "--keep-data": o.keepData = true; break;
			case "--engine-metrics": o.engineMetrics = true; break;
			case "--engine-cpu-max": o.engineCpuMax = Number(v()); break;
			case "-h": case "--help": process.stdout.write(HELP); process.exit(0);
			default: throw new Error(`unknown option ${a}\n${HELP}`);
		}
	}
	const known = ["ours", "official", "asgi", "official-nodelay", "ours-engine", "ours-engine-nodelay", "ours-engine-save1s", "official-durable"];
	for (const t of o.targets) if (!known.includes(t)) throw new Error(`unknown target ${t}`);
	if (o.engineCpuMax !== null && !(Number.isInteger(o.engineCpuMax) && o.engineCpuMax > 0)) throw new Error("--engine-cpu-max takes a positive integer (millicores)");
	for (const s of o.scenarios) if (!["cold", "http", "ws", "fanout", ...LIFECYCLE].includes(s)) throw new Error(`unknown scenario ${s}`);
	for (const v of o.schedVariants) if (!["idle", "load", "nap", "nap-load"].includes(v)) throw new Error(`unknown schedule variant ${v}`);
	for (const m of o.queueModes) if (!["wait", "nowait"].includes(m)) throw new Error(`unknown queue mode ${m}`);
	if (!["raw", "official"].includes(o.queueClient)) throw new Error(`unknown queue client ${o.queueClient}`);
	if (!["json", "cbor", "bare"].includes(o.queueEncoding)) throw new Error(`unknown queue encoding ${o.queueEncoding}`);
	if (!(o.queueConcurrency.every((c) => c >= 1) && o.queueDrain > 0)) throw new Error("bad numeric option");
	if (!(o.wakeN >= 1 && o.wakePoll >= 1 && o.wakeSettle >= 0 && o.schedEvents >= 1 && o.schedActors >= 1 && o.schedSpread > 0 && o.schedLead >= 0 && o.schedTail >= 0 && o.schedLoad >= 1 && o.memN >= 3 && o.memParallel >= 1)) throw new Error("bad numeric option");
	if (!["raw", "node-http"].includes(o.client)) throw new Error(`unknown client ${o.client}`);
	if (!["raw", "ws"].includes(o.wsClient)) throw new Error(`unknown ws client ${o.wsClient}`);
	if (!(o.reps >= 1 && o.duration > 0 && o.duration <= 60 && o.warmup >= 0 && o.coldN >= 1 && o.wsInflight.every((k) => k >= 1) && o.wsMany >= 0 && o.fanoutSubs >= 1 && o.fanoutRounds >= 1)) throw new Error("bad numeric option");
	return o;
}

// scenarios that need the lifecycle actors (sleepy, ticker) or the queue consumer (worker): not
// served by the bare ASGI app
const LIFECYCLE = ["wake", "schedule", "mem", "queue"];

function defaultOut() {
	const d = new Date();
	const day = d.toISOString().slice(0, 10);
	const root = path.join(benchDir, "out");
	for (let n = 1; ; n++) {
		const dir = path.join(root, n === 1 ? day : `${day}-${n}`);
		if (!fs.existsSync(dir) || fs.readdirSync(dir).length === 0) return dir;
	}
}

function sh(cmd, args) {
	try {
		return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
	} catch {
		return "?";
	}
}

function fmt(x, d = 2) {
	if (x === null || x === undefined || Number.isNaN(x)) return "-";
	if (Math.abs(x) >= 100) return x.toFixed(0);
	return x.toFixed(d);
}

async function main() {
	const o = parseArgs(process.argv.slice(2));
	setWsClient(o.wsClient);
	const out = o.out ?? defaultOut();
	fs.mkdirSync(path.join(out, "logs"), { recursive: true });
	// pid file shared with run.sh's trap (it SIGKILLs leftovers if we die without cleaning up)
	setPidFile(process.env.BENCH_PIDFILE || path.join(out, ".live-pids"));

	const resultsPath = path.join(out, "results.jsonl");
	const runId = new Date().toISOString().replace(/[-:]/g, "").slice(0, 15);
	const env = {
		date: new Date().toISOString(),
		kernel: os.release(),
		cpus: os.cpus().length,
		cpuModel: os.cpus()[0]?.model,
		memGiB: Math.round(os.totalmem() / 2 ** 30),
		loadavg: os.loadavg(),
		node: process.version,
		python: sh(o.python, ["-c", "import sys,uvicorn;print(sys.version.split()[0],'uvicorn',uvicorn.__version__)"]),
		rivetkitNpm: (() => { try { return JSON.parse(fs.readFileSync(path.join(benchDir, "node_modules/rivetkit/package.json"), "utf8")).version; } catch { return null; } })(),
		repoHead: sh("git", ["-C", repoDir, "rev-parse", "--short", "HEAD"]),
		options: o,
	};
	fs.writeFileSync(path.join(out, "env.json"), JSON.stringify(env, null, 2) + "\n");
	console.log(`bench: out=${out}`);
	console.log(`bench: targets=${o.targets} scenarios=${o.scenarios} reps=${o.reps} duration=${o.duration}s warmup=${o.warmup}s client=${o.client} ws-client=${o.wsClient}`);

	const targets = makeTargets({
		benchDir,
		repoDir,
		python: o.python,
		oursApp: o.oursApp,
		oursArgs: o.oursArgs,
		engineSettings: o.engineCpuMax ? { RIVET__RUNTIME__WORKER_CPU_MAX: String(o.engineCpuMax) } : {},
		readyTimeoutMs: o.readyTimeout * 1000,
		keepData: o.keepData,
	});

	let current = null;
	let stopping = false;
	const onSignal = async (sig) => {
		if (stopping) return;
		stopping = true;
		console.error(`\nbench: ${sig}: stopping servers`);
		try {
			if (current) await Promise.race([current.stop(), new Promise((r) => setTimeout(r, 15000))]);
			await stopPids(trackedPids(), 3000);
		} finally {
			killAllSync();
			process.exit(130);
		}
	};
	process.on("SIGINT", () => onSignal("SIGINT"));
	process.on("SIGTERM", () => onSignal("SIGTERM"));
	process.on("SIGHUP", () => onSignal("SIGHUP"));
	process.on("exit", () => killAllSync());

	const write = (row) => {
		if (!stopping) fs.appendFileSync(resultsPath, JSON.stringify(row) + "\n");
	};
	const t0 = Date.now();
	for (let rep = 1; rep <= o.reps; rep++) {
		// rotate the target order each repetition so no target always runs first/last
		const order = o.targets.map((_, i) => o.targets[(i + rep - 1) % o.targets.length]);
		for (const name of order) {
			const tag = `${runId}-r${rep}`;
			const dataDir = path.join(out, "data", `${name}-r${rep}`);
			const logPath = path.join(out, "logs", `${name}-r${rep}.log`);
			const base = { ts: null, runId, rep, target: name, client: o.client, wsClient: o.wsClient };
			const log = (row) => {
				if (stopping) return; // interrupted: the server is being stopped under our feet
				const full = { ...base, ...row, ts: new Date().toISOString() };
				write(full);
				const l = full.latencyMs ?? {};
				console.log(
					`  ${name.padEnd(16)} ${String(row.scenario).padEnd(6)} ${String(row.variant).padEnd(44)} ` +
						(row.throughput !== undefined ? `${fmt(row.throughput, 1).padStart(7)}/s ` : "          ") +
						`p50 ${fmt(l.p50)} p99 ${fmt(l.p99)} max ${fmt(l.max)} ms  ` +
						`srvCPU ${fmt(row.serverCpuUsPerOp, 0)}us/op  self ${fmt(row.harnessCpuPctCore, 0)}%core  ` +
						`err ${row.errors ?? 0}${row.consistent === false ? "  INCONSISTENT: " + (row.consistencyProblems?.[0] ?? row.firstError) : ""}` +
						(row.firstError && row.consistent !== false ? `  first error: ${row.firstError.slice(0, 120)}` : ""),
				);
			};
			console.log(`rep ${rep}/${o.reps} ${name}: starting (${Math.round((Date.now() - t0) / 1000)} s elapsed)`);
			let srv;
			try {
				srv = await targets[name]({ dataDir, logPath });
			} catch (e) {
				console.log(`  ${name}: failed to start: ${e.message}`);
				write({ ...base, ts: new Date().toISOString(), scenario: "start", variant: "server start", error: e.message });
				continue;
			}
			current = srv;
			write({
				...base,
				ts: new Date().toISOString(),
				scenario: "start",
				variant: "server start -> first answer",
				readyMs: srv.readyMs,
				port: srv.port,
				...(srv.engine !== undefined ? { engine: srv.engine } : {}),
			});
			const ep = new Endpoint("127.0.0.1", srv.port);
			let g = 0;
			const gateFn = async () => {
				const r = await gate(ep, `${tag}-${g++}`);
				if (r.waitedMs > 1000) log({ scenario: "gate", variant: "wait for a new actor to answer", waitedMs: r.waitedMs });
			};
			try {
				for (const sc of o.scenarios) {
					try {
						try {
							await gateFn();
						} catch (e) {
							// the server no longer creates actors: skip the rest of this instance
							console.log(`  ${name}: ${e.message}; skipping its remaining scenarios`);
							write({ ...base, ts: new Date().toISOString(), scenario: "error", variant: `gate before ${sc}`, error: e.message });
							break;
						}
						// the pid set is fixed for a scenario (read once: scanning /proc takes a while)
						const pids = srv.pids();
						if (LIFECYCLE.includes(sc) && name === "asgi") {
							continue; // the bare ASGI app has no lifecycle
						} else if (sc === "wake") {
							await wakeScenario({ ep, tag, pids, n: o.wakeN, pollMs: o.wakePoll, settleMs: o.wakeSettle, timeoutMs: o.timeout * 1000, log });
						} else if (sc === "schedule") {
							await scheduleScenario({
								ep,
								tag,
								pids,
								events: o.schedEvents,
								actors: o.schedActors,
								spreadS: o.schedSpread,
								leadS: o.schedLead,
								tailMs: o.schedTail * 1000,
								loadConns: o.schedLoad,
								variants: o.schedVariants,
								timeoutMs: o.timeout * 1000,
								clientKind: o.client,
								log,
								gateFn,
							});
						} else if (sc === "queue") {
							await queueScenario({
								ep,
								tag,
								pids,
								concurrencies: o.queueConcurrency,
								modes: o.queueModes,
								warmupMs: o.warmup * 1000,
								durationMs: o.duration * 1000,
								timeoutMs: o.timeout * 1000,
								drainMs: o.queueDrain * 1000,
								clientKind: o.client,
								queueClient: o.queueClient,
								encoding: o.queueEncoding,
								log,
								gateFn,
							});
						} else if (sc === "mem") {
							await memScenario({ ep, tag, pids, n: o.memN, parallel: o.memParallel, settleMs: 2000, timeoutMs: o.timeout * 1000, log });
						} else if (sc === "cold") {
							await coldScenario({ ep, tag, pids, n: o.coldN, timeoutMs: o.timeout * 1000, log });
						} else if (sc === "ws") {
							await wsScenario({
								ep,
								tag,
								pids,
								pipeline: o.wsInflight,
								many: o.wsMany,
								warmupMs: o.warmup * 1000,
								durationMs: o.duration * 1000,
								timeoutMs: o.timeout * 1000,
								log,
								gateFn,
							});
						} else if (sc === "fanout") {
							await fanoutScenario({
								ep,
								tag,
								pids,
								subs: o.fanoutSubs,
								rounds: o.fanoutRounds,
								timeoutMs: o.timeout * 1000,
								log,
								gateFn,
							});
						} else {
							await httpScenario({
								ep,
								tag,
								pids,
								concurrencies: o.concurrency,
								many: o.many,
								warmupMs: o.warmup * 1000,
								durationMs: o.duration * 1000,
								timeoutMs: o.timeout * 1000,
								clientKind: o.client,
								log,
								gateFn,
							});
						}
					} catch (e) {
						if (stopping) break;
						console.log(`  ${name}: scenario ${sc} failed: ${e.stack ?? e.message}`);
						write({ ...base, ts: new Date().toISOString(), scenario: "error", variant: `scenario ${sc} failed`, error: String(e.message) });
					}
				}
			} finally {
				if (o.engineMetrics && srv.engine) await saveEngineMetrics(srv.port + 10, logPath.replace(/\.log$/, ".metrics.txt"));
				await srv.stop();
				current = null;
			}
		}
	}
	if (!o.keepData) fs.rmSync(path.join(out, "data"), { recursive: true, force: true });
	const md = renderSummary(fs.readFileSync(resultsPath, "utf8"), env);
	fs.writeFileSync(path.join(out, "summary.md"), md);
	console.log(`\nbench: done in ${Math.round((Date.now() - t0) / 1000)} s; results ${resultsPath}\n`);
	console.log(md);
	process.exit(0); // do not wait for stray timers/sockets
}

main().catch((e) => {
	console.error(e.stack ?? e.message);
	killAllSync();
	process.exit(1);
});

// The engine's Prometheus text (its metrics port is the guard port + 10 on every engine target).
async function saveEngineMetrics(port, file) {
	try {
		const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10000) });
		fs.writeFileSync(file, await res.text());
	} catch (e) {
		console.log(`  engine metrics not saved (${file}): ${e.message}`);
	}
}
