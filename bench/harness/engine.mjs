// The rivet-engine of the engine-mode targets (`ours-engine`, `ours-engine-nodelay`): which binary,
// started how, and a fingerprint of the engine a target actually ran (binary + settings) so that
// the report can show that `ours-engine` and `official` ran the same engine the same way.
//
// `official` does not start its engine itself: npm rivetkit@2.3.19's native runtime spawns
// `rivet-engine start` with no config file and the RIVET__* variables below (read from
// /proc/<engine>/environ of an `official` run; the list is the one in the runtime's
// rivetkit-rust/packages/engine-process). `ours-engine` starts the same binary with the same
// variables, so both targets' engines differ only in ports and data directory. The report
// compares the fingerprints of every run (`start` rows, field `engine`) and says so.
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const PLATFORM_PACKAGE = {
	"linux-x64": "engine-cli-linux-x64-musl",
	"linux-arm64": "engine-cli-linux-arm64-musl",
	"darwin-arm64": "engine-cli-darwin-arm64",
	"darwin-x64": "engine-cli-darwin-x64",
}[`${process.platform}-${process.arch}`];

/** rivet-engine of the npm package pinned in `<dir>/package.json` (`<dir>/node_modules/...`). */
export function engineBinaryIn(dir) {
	if (!PLATFORM_PACKAGE) throw new Error(`no rivet-engine npm package for ${process.platform}/${process.arch}`);
	return path.join(dir, "node_modules", "@rivetkit", PLATFORM_PACKAGE, "rivet-engine");
}

/** Version of the npm package holding `binary` (its package.json), or null. */
export function engineVersion(binary) {
	try {
		return JSON.parse(fs.readFileSync(path.join(path.dirname(binary), "package.json"), "utf8")).version;
	} catch {
		return null;
	}
}

/**
 * The engine binary the tests pin (tests/engine/package.json), installed on first use the way the
 * tests install it (tests/engine/engine_proc.py `engine_binary()`: `npm ci`, else `npm install`,
 * under the tests' file lock, with their install stamp; it also checks the version).
 */
export function testsEngineBinary({ repoDir, python }) {
	const binary = engineBinaryIn(path.join(repoDir, "tests", "engine"));
	if (!fs.existsSync(binary)) {
		console.log("bench: installing the tests' pinned rivet-engine into tests/engine/node_modules");
		execFileSync(python, ["-c", "from tests.engine.engine_proc import engine_binary; print(engine_binary())"], {
			cwd: repoDir,
			stdio: ["ignore", "inherit", "inherit"],
		});
		if (!fs.existsSync(binary)) throw new Error(`installing tests/engine did not produce ${binary}`);
	}
	return binary;
}

const shaCache = new Map();
/** sha256 of a file (hex), cached by path + size + mtime. */
export function sha256File(file) {
	const st = fs.statSync(file);
	const k = `${file}\u0000${st.size}\u0000${st.mtimeMs}`;
	if (!shaCache.has(k)) shaCache.set(k, createHash("sha256").update(fs.readFileSync(file)).digest("hex"));
	return shaCache.get(k);
}

/**
 * The environment rivetkit@2.3.19's runtime gives the engine it spawns, for guard port P
 * (api-peer P+1, metrics P+10) and the database under `dbPath`. Engine telemetry is off (the
 * `official` target sets RIVET__TELEMETRY__ENABLED=false in the runtime's environment, which the
 * engine inherits); `nodelay` adds RIVET__GUARD__TCP_NODELAY=true as `official-nodelay` does.
 */
export function engineEnv(baseEnv, port, dbPath, nodelay, extra = {}) {
	const env = { ...baseEnv };
	for (const k of Object.keys(env)) if (k.startsWith("RIVET__")) delete env[k]; // only ours below
	Object.assign(env, {
		RIVET__GUARD__HOST: "127.0.0.1",
		RIVET__GUARD__PORT: String(port),
		RIVET__API_PEER__HOST: "127.0.0.1",
		RIVET__API_PEER__PORT: String(port + 1),
		RIVET__METRICS__HOST: "127.0.0.1",
		RIVET__METRICS__PORT: String(port + 10),
		RIVET__FILE_SYSTEM__PATH: dbPath,
		RIVET__PEGBOARD__RETRY_RESET_DURATION: "100",
		RIVET__PEGBOARD__BASE_RETRY_TIMEOUT: "100",
		RIVET__PEGBOARD__RESCHEDULE_BACKOFF_MAX_EXPONENT: "1",
		RIVET__PEGBOARD__RUNNER_ELIGIBLE_THRESHOLD: "5000",
		RIVET__PEGBOARD__RUNNER_LOST_THRESHOLD: "7000",
		RIVET__PEGBOARD__ENVOY_ELIGIBLE_THRESHOLD: "5000",
		RIVET__PEGBOARD__ENVOY_LOST_THRESHOLD: "7000",
		RIVET__PEGBOARD__MIN_METADATA_POLL_INTERVAL: "1000",
		RIVET__FEATURES__GUARD_GATEWAY_V3__MODE: "on",
		RIVET__FEATURES__GUARD_GATEWAY_V3__PERCENTAGE: "100",
		RIVET__RUNTIME__WORKER_SHUTDOWN_DURATION: "1",
		RIVET__RUNTIME__GUARD_SHUTDOWN_DURATION: "1",
		RIVET__RUNTIME__FORCE_SHUTDOWN_DURATION: "2",
		RIVET__TELEMETRY__ENABLED: "false",
		RIVET_LOG_LEVEL: "warn",
		...(nodelay ? { RIVET__GUARD__TCP_NODELAY: "true" } : {}),
		...extra,
	});
	return env;
}

// Settings that necessarily differ between two engine processes (ports, data directory).
const PER_INSTANCE = /^RIVET__(GUARD__PORT|API_PEER__PORT|METRICS__PORT|FILE_SYSTEM__PATH)$/;

/**
 * What engine process `pid` runs: binary (path, npm package version, sha256), arguments after the
 * binary, and the settings from its environment (RIVET__* except ports and data dir, plus
 * RIVET_LOG_LEVEL and whether RUST_BACKTRACE / RUST_LOG are set). Null if unreadable.
 */
export function engineFingerprint(pid) {
	try {
		const exe = fs.readlinkSync(`/proc/${pid}/exe`);
		const args = fs.readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter(Boolean).slice(1);
		const settings = {};
		for (const kv of fs.readFileSync(`/proc/${pid}/environ`, "latin1").split("\0")) {
			const i = kv.indexOf("=");
			if (i < 0) continue;
			const k = kv.slice(0, i);
			if ((k.startsWith("RIVET__") && !PER_INSTANCE.test(k)) || k === "RIVET_LOG_LEVEL") settings[k] = kv.slice(i + 1);
			if (k === "RUST_BACKTRACE" || k === "RUST_LIB_BACKTRACE" || k === "RUST_LOG") settings[k] = kv.slice(i + 1);
		}
		return {
			binary: exe,
			version: engineVersion(exe),
			sha256: sha256File(exe),
			args,
			settings: Object.fromEntries(Object.entries(settings).sort(([a], [b]) => (a < b ? -1 : 1))),
		};
	} catch {
		return null;
	}
}

/** GET /health of the engine on `port` until it answers 200 (engine up; the API may lag a few ms). */
export async function waitEngineHealthy(port, { isDead, timeoutMs, describe }) {
	const t0 = performance.now();
	let last = "";
	while (performance.now() - t0 < timeoutMs) {
		if (isDead()) throw new Error(`rivet-engine exited before it was healthy\n${describe()}`);
		try {
			const r = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(2000) });
			if (r.ok) return performance.now() - t0;
			last = `HTTP ${r.status}`;
		} catch (e) {
			last = e.message;
		}
		await new Promise((r) => setTimeout(r, 50));
	}
	throw new Error(`rivet-engine not healthy after ${timeoutMs} ms (last: ${last})\n${describe()}`);
}
