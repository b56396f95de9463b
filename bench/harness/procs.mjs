// Process bookkeeping for the bench: starting servers in their own process group, finding their
// descendants, reading CPU/RSS from /proc, picking free loopback ports, and killing everything we
// started -- also from `exit`/signal handlers and (via a pid file) from bench/run.sh's trap.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";

let CLK_TCK = 100;
try {
	CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
} catch {}
export const clkTck = CLK_TCK;

/** Parse /proc/<pid>/stat; returns null if the process is gone. */
export function procStat(pid) {
	let s;
	try {
		s = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
	} catch {
		return null;
	}
	// comm is in parentheses and may contain spaces: split after the last ')'.
	const close = s.lastIndexOf(")");
	const comm = s.slice(s.indexOf("(") + 1, close);
	const f = s.slice(close + 2).split(" "); // f[0] is field 3 (state)
	return {
		pid,
		comm,
		state: f[0],
		ppid: Number(f[1]),
		utime: Number(f[11]), // field 14
		stime: Number(f[12]), // field 15
		starttime: f[19], // field 22 (kept as string: can exceed 2^53 in theory)
	};
}

/** All live pids whose parent chain leads to `root` (root included if alive). */
export function descendants(root) {
	const out = [];
	const byParent = new Map();
	for (const name of fs.readdirSync("/proc")) {
		if (!/^\d+$/.test(name)) continue;
		const st = procStat(Number(name));
		if (!st) continue;
		if (!byParent.has(st.ppid)) byParent.set(st.ppid, []);
		byParent.get(st.ppid).push(st.pid);
	}
	if (procStat(root)) out.push(root);
	const queue = [root];
	while (queue.length) {
		const p = queue.shift();
		for (const c of byParent.get(p) ?? []) {
			out.push(c);
			queue.push(c);
		}
	}
	return out;
}

/** Sum of sum_exec_runtime (ns) per thread of `pid`, from /proc/<pid>/task/<tid>/schedstat. */
function threadRuntimes(pid) {
	const out = {};
	let tids;
	try {
		tids = fs.readdirSync(`/proc/${pid}/task`);
	} catch {
		return null;
	}
	for (const tid of tids) {
		try {
			out[tid] = Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "latin1").split(" ")[0]);
		} catch {}
	}
	return out;
}

/**
 * CPU snapshot of a set of pids: { byPid: {pid: {comm, ticks, threads}}, t: ms }.
 * `ticks` (utime+stime from /proc/<pid>/stat) includes exited threads but has 1/CLK_TCK (10 ms)
 * granularity; per-thread schedstat runtimes are exact (ns) but lose threads that exit between two
 * snapshots. cpuDelta combines both.
 */
export function cpuSnapshot(pids) {
	const byPid = {};
	for (const pid of pids) {
		const st = procStat(pid);
		if (st) byPid[pid] = { comm: st.comm, ticks: st.utime + st.stime, threads: threadRuntimes(pid) };
	}
	return { byPid, t: performance.now() };
}

/** CPU µs spent between two snapshots, total and by process name. */
export function cpuDelta(a, b) {
	let total = 0;
	const byComm = {};
	const tickUs = 1e6 / CLK_TCK;
	for (const [pid, v] of Object.entries(b.byPid)) {
		const before = a.byPid[pid];
		const dTicksUs = (v.ticks - (before?.ticks ?? 0)) * tickUs; // born in between: count all of it
		let us = dTicksUs;
		if (v.threads) {
			let ns = 0;
			for (const [tid, rt] of Object.entries(v.threads)) ns += rt - (before?.threads?.[tid] ?? 0);
			const exact = ns / 1e3;
			// exact unless threads exited in between (then the tick count is clearly larger)
			us = dTicksUs > exact + 2 * tickUs ? dTicksUs : exact;
		}
		total += us;
		byComm[v.comm] = (byComm[v.comm] ?? 0) + us;
	}
	return { us: total, byComm };
}

/** Whole-machine CPU counters from /proc/stat (jiffies). */
export function machineSnapshot() {
	const line = fs.readFileSync("/proc/stat", "latin1").split("\n")[0];
	const v = line.trim().split(/\s+/).slice(1).map(Number);
	const idle = v[3] + (v[4] ?? 0);
	const total = v.slice(0, 8).reduce((x, y) => x + y, 0);
	return { idle, total };
}
export function machineBusyPct(a, b) {
	const dt = b.total - a.total;
	return dt > 0 ? (100 * (dt - (b.idle - a.idle))) / dt : null;
}

export function rssMiB(pids) {
	let kb = 0;
	for (const pid of pids) {
		try {
			const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "latin1"));
			if (m) kb += Number(m[1]);
		} catch {}
	}
	return kb / 1024;
}

/** Is `port` bindable on 127.0.0.1 right now? */
export function portFree(port) {
	return new Promise((resolve) => {
		const srv = net.createServer();
		srv.once("error", () => resolve(false));
		srv.listen({ host: "127.0.0.1", port, exclusive: true }, () => srv.close(() => resolve(true)));
	});
}

/** A free port P such that P+offsets are all free too (the engine uses P, P+1, P+10). */
export async function freePort(offsets = [0]) {
	for (let i = 0; i < 200; i++) {
		// below the kernel's ephemeral range (32768-60999 by default), so no outgoing connection
		// can grab the port between this check and the server's bind
		const p = 20000 + Math.floor(Math.random() * 12000);
		let ok = true;
		for (const o of offsets) if (!(await portFree(p + o))) { ok = false; break; }
		if (ok) return p;
	}
	throw new Error("no free port found");
}

// ---------------------------------------------------------------------------------------------
// Registry of everything we started. Each entry is persisted to `pidFile` as "pid starttime comm"
// so bench/run.sh can SIGKILL leftovers if this process dies without running its handlers.
const live = new Map(); // pid -> {starttime, comm}
let pidFile = null;

export function setPidFile(path) {
	pidFile = path;
	flushPidFile();
}
function flushPidFile() {
	if (!pidFile) return;
	const lines = [...live].map(([pid, v]) => `${pid} ${v.starttime} ${v.comm}`);
	try {
		fs.writeFileSync(pidFile, lines.join("\n") + (lines.length ? "\n" : ""));
	} catch {}
}
export function track(pid) {
	const st = procStat(pid);
	if (!st || live.has(pid)) return;
	live.set(pid, { starttime: st.starttime, comm: st.comm });
	flushPidFile();
}
function untrack(pid) {
	live.delete(pid);
	flushPidFile();
}
/** Same process as when tracked (guards against pid reuse)? */
function sameProc(pid) {
	const v = live.get(pid);
	const st = procStat(pid);
	return !!(v && st && st.starttime === v.starttime && st.state !== "Z");
}

/** Spawn `cmd args` in its own process group, stdout+stderr to `logPath`. */
export function startProcess(cmd, args, { cwd, env, logPath }) {
	const fd = fs.openSync(logPath, "a");
	const child = spawn(cmd, args, { cwd, env, detached: true, stdio: ["ignore", fd, fd] });
	fs.closeSync(fd);
	child.on("error", () => {});
	if (child.pid) track(child.pid);
	child.exitInfo = null;
	child.once("exit", (code, signal) => {
		child.exitInfo = { code, signal };
	});
	return child;
}

/** Track every current descendant of `root` (e.g. the engine spawned by the rivetkit runtime). */
export function trackTree(root) {
	const pids = descendants(root);
	for (const p of pids) track(p);
	return pids;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM `pids` (process group too when the pid leads one), wait up to graceMs, then SIGKILL. */
export async function stopPids(pids, graceMs = 8000) {
	for (const p of pids) track(p); // no-op for already tracked pids; records starttime otherwise
	const alive = pids.filter((p) => sameProc(p));
	for (const p of alive) {
		try { process.kill(-p, "SIGTERM"); } catch {}
		try { process.kill(p, "SIGTERM"); } catch {}
	}
	const deadline = Date.now() + graceMs;
	while (Date.now() < deadline && alive.some((p) => sameProc(p))) await sleep(100);
	for (const p of alive) {
		if (sameProc(p)) {
			try { process.kill(-p, "SIGKILL"); } catch {}
			try { process.kill(p, "SIGKILL"); } catch {}
		}
	}
	const d2 = Date.now() + 3000;
	while (Date.now() < d2 && alive.some((p) => sameProc(p))) await sleep(50);
	for (const p of pids) untrack(p);
}

/** Synchronous last resort (exit handler): SIGKILL everything still tracked. */
export function killAllSync() {
	for (const pid of [...live.keys()]) {
		if (sameProc(pid)) {
			try { process.kill(-pid, "SIGKILL"); } catch {}
			try { process.kill(pid, "SIGKILL"); } catch {}
		}
	}
	live.clear();
	flushPidFile();
}
export function trackedPids() {
	return [...live.keys()];
}
