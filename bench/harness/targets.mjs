// The servers under test. Each `start` launches a fresh instance (fresh storage dir, free loopback
// ports), waits until an action answers, and returns { port, pids(), stop() }.
import fs from "node:fs";
import path from "node:path";
import { RawConn, request } from "./http.mjs";
import { Endpoint, intOutput } from "./scenarios.mjs";
import { descendants, freePort, procStat, startProcess, stopPids, track, trackTree } from "./procs.mjs";
import { engineBinaryIn, engineEnv, engineFingerprint, engineVersion, testsEngineBinary, waitEngineHealthy } from "./engine.mjs";

// ours-engine-save1s: bench/actors.py with the counter at the official runtime's durability
const SAVE1S_APP = "bench/engine/actors_save1s.py";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function tail(file, n = 15) {
	try {
		return fs.readFileSync(file, "utf8").split("\n").slice(-n).join("\n");
	} catch {
		return "";
	}
}

/** Poll noop until it answers 200 {"output":0}; fail early if the process died. */
async function waitReady(port, child, logPath, timeoutMs) {
	const ep = new Endpoint("127.0.0.1", port);
	const conn = new RawConn("127.0.0.1", port);
	const t0 = performance.now();
	let last = "";
	try {
		while (performance.now() - t0 < timeoutMs) {
			if (child.exitInfo || !procStat(child.pid)) {
				throw new Error(`server exited (${JSON.stringify(child.exitInfo)}) before becoming ready; log tail:\n${tail(logPath)}`);
			}
			try {
				const r = await request(conn, ep.req("noop", "bench-ready", [0]), 10000);
				if (intOutput(r.status, r.body) === 0) return performance.now() - t0;
			} catch (e) {
				last = e.message;
			}
			await sleep(100);
		}
	} finally {
		conn.close();
	}
	throw new Error(`server not ready after ${timeoutMs} ms (last: ${last}); log tail:\n${tail(logPath)}`);
}

function cleanEnv(extra) {
	const env = { ...process.env, ...extra };
	// With RUST_BACKTRACE set, every engine error captures a backtrace: several times more CPU.
	delete env.RUST_BACKTRACE;
	delete env.RUST_LIB_BACKTRACE;
	return env;
}

export function makeTargets(opts) {
	const { benchDir, repoDir, python } = opts;

	async function simple(name, cmd, args, { cwd, env, dataDir, logPath, port }) {
		const child = startProcess(cmd, args, { cwd, env, logPath });
		let readyMs;
		try {
			readyMs = await waitReady(port, child, logPath, opts.readyTimeoutMs);
		} catch (e) {
			await stopPids(descendants(child.pid).concat(child.pid));
			throw e;
		}
		trackTree(child.pid);
		return {
			name,
			port,
			readyMs,
			pids: () => descendants(child.pid),
			stop: async () => {
				await stopPids([child.pid, ...descendants(child.pid)]);
				if (!opts.keepData && dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
			},
		};
	}

	return {
		// our Python server: python -m rivetkit serve APP --host 127.0.0.1 --port P --storage DIR
		ours: async ({ dataDir, logPath }) => {
			const port = await freePort();
			fs.mkdirSync(dataDir, { recursive: true });
			return simple(
				"ours",
				python,
				["-m", "rivetkit", "serve", opts.oursApp, "--host", "127.0.0.1", "--port", String(port), "--storage", dataDir, ...opts.oursArgs],
				{ cwd: repoDir, env: cleanEnv({ PYTHONUNBUFFERED: "1" }), dataDir, logPath, port },
			);
		},

		// bare ASGI app on uvicorn + uvloop + httptools (in-memory dict)
		asgi: async ({ logPath }) => {
			const port = await freePort();
			return simple("asgi", python, [path.join(benchDir, "asgi", "ceiling.py"), String(port)], {
				cwd: benchDir,
				env: cleanEnv({ PYTHONUNBUFFERED: "1" }),
				logPath,
				port,
			});
		},

		// official stack: node official/server.mjs (rivetkit runtime) + the rivet-engine it spawns
		official: (ctx) => startOfficial(ctx, false),
		"official-nodelay": (ctx) => startOfficial(ctx, true),
		// the same with our runtime's durability: the counter's increment answers after its state
		// commit (`saveState({ immediate: true })`), as every action of ours does by default
		"official-durable": (ctx) => startOfficial(ctx, false, true),

		// engine mode: rivet-engine (started as the official runtime starts it) + our runtime
		// process hosting bench/actors.py on it (`serve --engine URL --pool default`)
		"ours-engine": (ctx) => startOursEngine(ctx, false),
		"ours-engine-nodelay": (ctx) => startOursEngine(ctx, true),
		// the same with the official runtime's durability (the counter saves its state at most once
		// per second, answers without waiting): bench/engine/actors_save1s.py, whatever --ours-app says
		"ours-engine-save1s": (ctx) => startOursEngine(ctx, false, SAVE1S_APP),
	};

	async function startOursEngine({ dataDir, logPath }, nodelay, app = opts.oursApp) {
		const name = app === SAVE1S_APP ? "ours-engine-save1s" : nodelay ? "ours-engine-nodelay" : "ours-engine";
		const engineBin = testsEngineBinary({ repoDir, python });
		const officialBin = engineBinaryIn(benchDir);
		// the official target runs bench/node_modules' engine: same npm version required (the report
		// also compares the binaries' sha256 and the settings each run's engine actually had)
		if (fs.existsSync(officialBin) && engineVersion(officialBin) !== engineVersion(engineBin)) {
			throw new Error(`${name}: tests/engine pins rivet-engine ${engineVersion(engineBin)}, the official target runs ${engineVersion(officialBin)}`);
		}
		const port = await freePort([0, 1, 10]); // guard P, api-peer P+1, metrics P+10 (as official)
		const engineDir = path.join(dataDir, "engine");
		const pyDir = path.join(dataDir, "py");
		fs.mkdirSync(engineDir, { recursive: true });
		fs.mkdirSync(pyDir, { recursive: true });
		const engineLog = logPath.replace(/\.log$/, "") + ".engine.log";
		const engine = startProcess(engineBin, ["start"], {
			cwd: engineDir,
			env: engineEnv(cleanEnv({}), port, path.join(engineDir, "db"), nodelay, opts.engineSettings),
			logPath: engineLog,
		});
		let py = null;
		const all = () => [...(py ? descendants(py.pid) : []), ...descendants(engine.pid)];
		const t0 = performance.now();
		let readyMs;
		try {
			await waitEngineHealthy(port, {
				isDead: () => !!engine.exitInfo || !procStat(engine.pid),
				timeoutMs: opts.readyTimeoutMs,
				describe: () => tail(engineLog),
			});
			py = startProcess(
				python,
				["-m", "rivetkit", "serve", app, "--engine", `http://127.0.0.1:${port}`, "--pool", "default", "--storage", pyDir, ...opts.oursArgs],
				{ cwd: repoDir, env: cleanEnv({ PYTHONUNBUFFERED: "1" }), logPath },
			);
			await waitReady(port, py, logPath, Math.max(1000, opts.readyTimeoutMs - (performance.now() - t0)));
			readyMs = performance.now() - t0;
		} catch (e) {
			await stopPids(all(), 8000);
			throw new Error(`${e.message}\nengine log tail:\n${tail(engineLog)}`);
		}
		trackTree(py.pid);
		trackTree(engine.pid);
		return {
			name,
			port,
			readyMs,
			engine: engineFingerprint(engine.pid),
			pids: all,
			stop: async () => {
				// runtime first (it stops its actors and leaves the engine), then the engine
				await stopPids([py.pid, ...descendants(py.pid)], 8000);
				await stopPids([engine.pid, ...descendants(engine.pid)], 10000);
				if (!opts.keepData) fs.rmSync(dataDir, { recursive: true, force: true });
			},
		};
	}

	async function startOfficial({ dataDir, logPath }, nodelay, durable = false) {
		const engineBin = path.join(benchDir, "node_modules", "@rivetkit", "engine-cli-linux-x64-musl", "rivet-engine");
		if (!fs.existsSync(path.join(benchDir, "node_modules", "rivetkit", "package.json")) || !fs.existsSync(engineBin)) {
			throw new Error("bench/node_modules is missing rivetkit / @rivetkit/engine-cli: run `npm ci` in bench/ (run.sh does it)");
		}
		const port = await freePort([0, 1, 10]); // guard P, api-peer P+1, metrics P+10
		fs.mkdirSync(dataDir, { recursive: true });
		const env = cleanEnv({
			RIVET_RUN_ENGINE_HOST: "127.0.0.1",
			RIVET_RUN_ENGINE_PORT: String(port),
			RIVETKIT_STORAGE_PATH: dataDir,
			RIVET_RUN_SERVICES: "0", // no extra "services" actor host
			RIVET_LOG_LEVEL: "warn",
			RIVET__TELEMETRY__ENABLED: "false", // engine telemetry off
			...(nodelay ? { RIVET__GUARD__TCP_NODELAY: "true" } : {}),
			...(durable ? { BENCH_DURABLE: "1" } : {}),
			...opts.engineSettings, // the runtime passes its environment to the engine it spawns
		});
		const child = startProcess(process.execPath, [path.join(benchDir, "official", "server.mjs")], { cwd: benchDir, env, logPath });
		const stamp = path.join(dataDir, ".rivetkit", "var", "engine", "runtime.json");
		let enginePid = null;
		const findEngine = () => {
			// The runtime spawns the engine as a child in its own process group and leaves it running
			// when the runtime exits; its pid is also recorded in the storage dir.
			for (const p of descendants(child.pid)) track(p);
			try {
				const pid = JSON.parse(fs.readFileSync(stamp, "utf8")).pid;
				if (pid && procStat(pid) && procStat(pid).comm.startsWith("rivet-engine")) {
					enginePid = pid;
					track(pid);
				}
			} catch {}
		};
		const poll = setInterval(findEngine, 200);
		let readyMs;
		try {
			readyMs = await waitReady(port, child, logPath, opts.readyTimeoutMs);
		} catch (e) {
			clearInterval(poll);
			findEngine();
			await stopPids([child.pid, ...descendants(child.pid), ...(enginePid ? [enginePid] : [])]);
			throw e;
		} finally {
			clearInterval(poll);
		}
		findEngine();
		if (!enginePid) throw new Error("official: could not find the rivet-engine process");
		const pids = () => {
			const s = new Set(descendants(child.pid));
			if (procStat(enginePid)) s.add(enginePid);
			return [...s];
		};
		return {
			name: durable ? "official-durable" : nodelay ? "official-nodelay" : "official",
			port,
			readyMs,
			engine: engineFingerprint(enginePid),
			pids,
			stop: async () => {
				const all = pids();
				// runtime first (it stops its actors), then the engine (it outlives the runtime)
				await stopPids([child.pid], 8000);
				await stopPids(all.filter((p) => p !== child.pid), 10000);
				if (!opts.keepData) fs.rmSync(dataDir, { recursive: true, force: true });
			},
		};
	}
}
