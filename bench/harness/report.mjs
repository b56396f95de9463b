#!/usr/bin/env node
// results.jsonl -> markdown: every number is "median [min..max]" across repetitions.
// Standalone: node bench/harness/report.mjs bench/out/<dir>   (prints the markdown)
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const median = (a) => {
	const s = [...a].sort((x, y) => x - y);
	const n = s.length;
	return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
function num(x) {
	if (x === null || x === undefined || Number.isNaN(x)) return "";
	const a = Math.abs(x);
	if (a >= 1000) return x.toFixed(0);
	if (a >= 100) return x.toFixed(0);
	if (a >= 10) return x.toFixed(1);
	if (a >= 1) return x.toFixed(2);
	return x.toFixed(3);
}
/** "median [min..max]" or just the value for one repetition. */
function mmm(vals) {
	const v = vals.filter((x) => typeof x === "number" && !Number.isNaN(x));
	if (!v.length) return "";
	if (v.length === 1) return num(v[0]);
	return `${num(median(v))} [${num(Math.min(...v))}..${num(Math.max(...v))}]`;
}
const med = (vals) => {
	const v = vals.filter((x) => typeof x === "number" && !Number.isNaN(x));
	return v.length ? median(v) : null;
};

// Engine-hosted targets (official*, ours-engine*): the server is a runtime process (node / python)
// plus rivet-engine. "runtime" = every process but the engine, "engine" = rivet-engine alone, per op.
const ENGINE_COMM = "rivet-engine";
const engineUs = (r) => r.serverCpuUsPerOpByProc?.[ENGINE_COMM];
const runtimeUs = (r) => {
	const by = r.serverCpuUsPerOpByProc;
	if (!by) return r.serverCpuUsPerOp;
	if (by[ENGINE_COMM] === undefined) return r.serverCpuUsPerOp;
	return Object.entries(by).reduce((a, [k, v]) => (k === ENGINE_COMM ? a : a + v), 0);
};

export function renderSummary(jsonl, env = null) {
	const rows = jsonl.split("\n").filter(Boolean).map((l) => JSON.parse(l));
	const targetOrder = env?.options?.targets ?? [...new Set(rows.map((r) => r.target))];
	const tIdx = (t) => (targetOrder.includes(t) ? targetOrder.indexOf(t) : 99);
	const groups = new Map();
	for (const r of rows) {
		if (!["cold", "http", "ws", "fanout", "wake", "schedule", "mem", "queue"].includes(r.scenario)) continue;
		const k = `${r.scenario}\u0000${r.variant}\u0000${r.target}`;
		if (!groups.has(k)) groups.set(k, []);
		groups.get(k).push(r);
	}
	// the main table: cold, http, ws, fanout (the lifecycle scenarios have tables of their own)
	const keys = [...groups.keys()].filter((k) => ["cold", "http", "ws", "fanout"].includes(k.split("\u0000")[0])).sort((a, b) => {
		const [sa, va, ta] = a.split("\u0000");
		const [sb, vb, tb] = b.split("\u0000");
		const order = (s, v) => {
			const first = rows.findIndex((r) => r.scenario === s && r.variant === v);
			return first;
		};
		return order(sa, va) - order(sb, vb) || (sa === sb && va === vb ? tIdx(ta) - tIdx(tb) : 0);
	});
	const get = (s, v, t) => groups.get(`${s}\u0000${v}\u0000${t}`) ?? [];
	const L = [];
	if (env) {
		L.push(`# rivetkit bench — ${env.date}`, "");
		L.push(
			`Machine: ${env.cpus} CPU (${env.cpuModel}), ${env.memGiB} GiB, kernel ${env.kernel}, load at start ${env.loadavg.map((x) => x.toFixed(2)).join(" ")}; ` +
				`node ${env.node}; python ${env.python}; npm rivetkit ${env.rivetkitNpm}; repo ${env.repoHead}.`,
		);
		const o = env.options;
		L.push(
			`Options: targets ${o.targets.join(",")}; scenarios ${o.scenarios.join(",")}; reps ${o.reps}; http ${o.duration} s measured after ${o.warmup} s warm-up; ` +
				`hot concurrency ${o.concurrency.join("/")}; many ${o.many}; cold N ${o.coldN}; client ${o.client}` +
				(o.wsInflight ? `; ws client ${o.wsClient}, ws in flight ${o.wsInflight.join("/")}, ws many ${o.wsMany}; fanout ${o.fanoutSubs} subscribers x ${o.fanoutRounds} rounds.` : "."),
			"",
		);
	}

	// ---- headline: the issue's targets
	const p = (s, v, t, f) => med(get(s, v, t).map(f));
	const maxC = env?.options?.concurrency ? Math.max(...env.options.concurrency) : 64;
	const many = env?.options?.many ?? 64;
	const wsMany = env?.options?.wsMany ?? 64;
	const wsManyV = `${wsMany} conns to ${wsMany} actors, 1 in flight each`;
	const subs = env?.options?.fanoutSubs ?? 100;
	const pct = (s, v, t) => {
		const a = p(s, v, "asgi", (r) => r.throughput);
		const x = p(s, v, t, (r) => r.throughput);
		return a && x !== null ? (100 * x) / a : null;
	};
	const hasEngine = rows.some((r) => engineUs(r) !== undefined);
	const hl = [
		["cold start p50 (new key → first result), ms", "< 2", (t) => p("cold", "new key -> first increment", t, (r) => r.latencyMs?.p50), num],
		["cold start p99, ms", "", (t) => p("cold", "new key -> first increment", t, (r) => r.latencyMs?.p99), num],
		["warm actor sequential p50, ms", "", (t) => p("cold", "warm actor increment (reference)", t, (r) => r.latencyMs?.p50), num],
		["HTTP action p50 at c=1, ms", "< 0.5", (t) => p("http", "hot actor c=1", t, (r) => r.latencyMs?.p50), num],
		[`hot actor actions/s at c=${maxC}`, "≥ 50 % of asgi", (t) => p("http", `hot actor c=${maxC}`, t, (r) => r.throughput), num],
		[`hot actor c=${maxC}: % of the bare ASGI app`, "≥ 50 %", (t) => {
			const a = p("http", `hot actor c=${maxC}`, "asgi", (r) => r.throughput);
			const x = p("http", `hot actor c=${maxC}`, t, (r) => r.throughput);
			return a && x !== null ? (100 * x) / a : null;
		}, (x) => `${num(x)} %`],
		[`${many} actors c=${many} actions/s`, "", (t) => p("http", `${many} actors c=${many}`, t, (r) => r.throughput), num],
		[`server CPU µs per action, hot c=${maxC}`, "", (t) => p("http", `hot actor c=${maxC}`, t, (r) => r.serverCpuUsPerOp), num],
		...(hasEngine
			? [
					[`runtime process CPU µs per action, hot c=${maxC}`, "", (t) => p("http", `hot actor c=${maxC}`, t, runtimeUs), num],
					[`rivet-engine CPU µs per action, hot c=${maxC}`, "", (t) => p("http", `hot actor c=${maxC}`, t, engineUs), num],
					[`runtime process CPU µs per action, ${many} actors c=${many}`, "", (t) => p("http", `${many} actors c=${many}`, t, runtimeUs), num],
					[`rivet-engine CPU µs per action, ${many} actors c=${many}`, "", (t) => p("http", `${many} actors c=${many}`, t, engineUs), num],
				]
			: []),
		["server CPU µs per cold start", "", (t) => p("cold", "new key -> first increment", t, (r) => r.serverCpuUsPerOp), num],
		[`harness CPU µs per action, hot c=${maxC}`, "", (t) => p("http", `hot actor c=${maxC}`, t, (r) => r.harnessCpuUsPerOp), num],
		["WS action p50, 1 conn, 1 in flight, ms", "", (t) => p("ws", "1 conn, 1 in flight", t, (r) => r.latencyMs?.p50), num],
		[`WS ${wsMany} conns on ${wsMany} actors, actions/s`, "≥ 50 % of asgi", (t) => p("ws", wsManyV, t, (r) => r.throughput), num],
		[`WS ${wsMany} conns on ${wsMany} actors: % of the bare ASGI app`, "≥ 50 %", (t) => pct("ws", wsManyV, t), (x) => `${num(x)} %`],
		[`server CPU µs per WS action, ${wsMany} conns`, "", (t) => p("ws", wsManyV, t, (r) => r.serverCpuUsPerOp), num],
		...(hasEngine
			? [
					[`runtime process CPU µs per WS action, ${wsMany} conns`, "", (t) => p("ws", wsManyV, t, runtimeUs), num],
					[`rivet-engine CPU µs per WS action, ${wsMany} conns`, "", (t) => p("ws", wsManyV, t, engineUs), num],
				]
			: []),
		[`harness CPU µs per WS action, ${wsMany} conns`, "", (t) => p("ws", wsManyV, t, (r) => r.harnessCpuUsPerOp), num],
		[`WS connect to a new actor (to Init) p50, ms`, "", (t) => p("ws", `connect ${wsMany} new actors, 4 at a time (to Init)`, t, (r) => r.latencyMs?.p50), num],
		[`fan-out to ${subs} subscribers, all received p50, ms`, "< 5", (t) => p("fanout", `${subs} subscribers: send -> all received`, t, (r) => r.latencyMs?.p50), num],
		[`fan-out to ${subs} subscribers, all received p99, ms`, "", (t) => p("fanout", `${subs} subscribers: send -> all received`, t, (r) => r.latencyMs?.p99), num],
		[`fan-out to ${subs} subscribers, first received p50, ms`, "", (t) => p("fanout", `${subs} subscribers: send -> first received`, t, (r) => r.latencyMs?.p50), num],
	];
	// lifecycle (issue 4): only when those scenarios ran
	const has = (sc) => rows.some((r) => r.scenario === sc);
	const schedV = (suffix) => [...new Set(rows.filter((r) => r.scenario === "schedule" && r.variant.includes(`, ${suffix}`)).map((r) => r.variant))][0];
	if (has("wake")) {
		hl.push(["wake from sleep (asleep actor → first action) p50, ms", "< 2", (t) => p("wake", "asleep actor -> hit (wake)", t, (r) => r.latencyMs?.p50), num]);
		hl.push(["wake from sleep p99, ms", "", (t) => p("wake", "asleep actor -> hit (wake)", t, (r) => r.latencyMs?.p99), num]);
	}
	for (const [suffix, label] of [["idle:", "idle"], ["load (", "under HTTP load"], ["nap:", "actor asleep before each event"]]) {
		const v = schedV(suffix);
		if (!v) continue;
		hl.push([`schedule lateness p50 / p99, ${label}, ms`, "", (t) => {
			const a = p("schedule", v, t, (r) => r.latencyMs?.p50);
			const b = p("schedule", v, t, (r) => r.latencyMs?.p99);
			return a === null ? null : [a, b];
		}, (x) => `${num(x[0])} / ${num(x[1])}`]);
	}
	if (has("mem")) {
		const v = [...new Set(rows.filter((r) => r.scenario === "mem").map((r) => r.variant))][0];
		hl.push(["server RSS per awake actor over HTTP, KiB", "", (t) => p("mem", v, t, (r) => r.kibPerActor), num]);
	}
	// queue (issue 5): only when that scenario ran
	const queueV = (prefix, c) => [...new Set(rows.filter((r) => r.scenario === "queue" && r.variant.startsWith(prefix) && r.concurrency === c).map((r) => r.variant))][0];
	for (const c of env?.options?.queueConcurrency ?? []) {
		const v = queueV("send wait=true", c);
		if (v) {
			hl.push([`queue send to completion, ${c} senders → 1 consumer, msgs/s`, "", (t) => p("queue", v, t, (r) => r.throughput), num]);
			hl.push([`queue send to completion, ${c} senders, p50 / p99 ms`, "", (t) => {
				const a = p("queue", v, t, (r) => r.latencyMs?.p50);
				return a === null ? null : [a, p("queue", v, t, (r) => r.latencyMs?.p99)];
			}, (x) => `${num(x[0])} / ${num(x[1])}`]);
		}
	}
	for (const c of env?.options?.queueConcurrency ?? []) {
		const v = queueV("enqueue wait=false", c);
		if (v) hl.push([`queue enqueue (wait=false), ${c} senders, msgs/s`, "", (t) => p("queue", v, t, (r) => r.throughput), num]);
	}
	L.push("## Headline (medians across repetitions)", "");
	L.push(`| metric | goal (ours) | ${targetOrder.join(" | ")} |`);
	L.push(`|---|---|${targetOrder.map(() => "---").join("|")}|`);
	for (const [label, goal, f, show] of hl) {
		const cells = targetOrder.map((t) => {
			const x = f(t);
			return x === null || x === undefined || Number.isNaN(x) ? "–" : show(x);
		});
		if (cells.every((c) => c === "–")) continue; // not measured in this run
		L.push(`| ${label} | ${goal} | ${cells.join(" | ")} |`);
	}
	L.push("");

	// ---- full table
	if (keys.length) {
		L.push("## All measurements: median [min..max] across repetitions", "");
		L.push(
			"| scenario | variant | target | reps | actions/s | % of asgi | p50 ms | p90 ms | p99 ms | max ms | errors | consistent | server CPU µs/op | by process µs/op | server %core | harness µs/op | harness %core | other procs %core | server RSS MiB |",
		);
		L.push("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
		for (const k of keys) {
			const [s, v, t] = k.split("\u0000");
			const g = groups.get(k);
			const thr = g.map((r) => r.throughput);
			const asgiThr = med(get(s, v, "asgi").map((r) => r.throughput));
			const myThr = med(thr);
			const pct = (s === "http" || s === "ws") && asgiThr && myThr !== null && t !== "asgi" ? `${num((100 * myThr) / asgiThr)} %` : "";
			const comms = [...new Set(g.flatMap((r) => Object.keys(r.serverCpuUsPerOpByProc ?? {})))];
			const byProc =
				comms.length > 1 ? comms.map((c) => `${c} ${num(med(g.map((r) => r.serverCpuUsPerOpByProc?.[c] ?? 0)))}`).join(", ") : "";
			const errs = g.reduce((a, r) => a + (r.errors ?? 0), 0);
			const errsAll = g.reduce((a, r) => a + (r.errorsTotal ?? r.errors ?? 0), 0);
			const okReps = g.filter((r) => r.consistent).length;
			L.push(
				`| ${s} | ${v} | ${t} | ${g.length} | ${mmm(thr)} | ${pct} | ${mmm(g.map((r) => r.latencyMs?.p50))} | ${mmm(g.map((r) => r.latencyMs?.p90))} | ` +
					`${mmm(g.map((r) => r.latencyMs?.p99))} | ${mmm(g.map((r) => r.latencyMs?.max))} | ${errs}${errsAll !== errs ? ` (${errsAll} incl. warm-up)` : ""} | ` +
					`${okReps}/${g.length} | ${mmm(g.map((r) => r.serverCpuUsPerOp))} | ${byProc} | ${mmm(g.map((r) => r.serverCpuPctCore))} | ` +
					`${mmm(g.map((r) => r.harnessCpuUsPerOp))} | ${mmm(g.map((r) => r.harnessCpuPctCore))} | ${mmm(g.map((r) => r.otherCpuPctCore))} | ${mmm(g.map((r) => r.serverRssMiB))} |`,
			);
		}
		L.push("");
	}

	// ---- lifecycle tables
	const lgroups = new Map();
	for (const r of rows) {
		if (!["wake", "schedule", "mem", "queue"].includes(r.scenario)) continue;
		const k = `${r.scenario}\u0000${r.variant}\u0000${r.target}`;
		if (!lgroups.has(k)) lgroups.set(k, []);
		lgroups.get(k).push(r);
	}
	const lkeys = [...lgroups.keys()].sort((a, b) => {
		const [sa, va, ta] = a.split("\u0000");
		const [sb, vb, tb] = b.split("\u0000");
		const first = (s, v) => rows.findIndex((r) => r.scenario === s && r.variant === v);
		return first(sa, va) - first(sb, vb) || (sa === sb && va === vb ? tIdx(ta) - tIdx(tb) : 0);
	});
	const okCol = (g) => `${g.filter((r) => r.consistent).length}/${g.length}`;
	const errCol = (g) => g.reduce((a, r) => a + (r.errors ?? 0), 0);
	const lk = (sc) => lkeys.filter((k) => k.startsWith(`${sc}\u0000`));
	if (lk("wake").length) {
		L.push("## Wake from sleep (sequential, one keep-alive connection): median [min..max] across repetitions", "");
		L.push("| variant | target | reps | p50 ms | p90 ms | p99 ms | max ms | errors | consistent | server CPU µs per wake |");
		L.push("|---|---|---|---|---|---|---|---|---|---|");
		for (const k of lk("wake")) {
			const [, v, t] = k.split("\u0000");
			const g = lgroups.get(k);
			L.push(`| ${v} | ${t} | ${g.length} | ${mmm(g.map((r) => r.latencyMs?.p50))} | ${mmm(g.map((r) => r.latencyMs?.p90))} | ${mmm(g.map((r) => r.latencyMs?.p99))} | ${mmm(g.map((r) => r.latencyMs?.max))} | ${errCol(g)} | ${okCol(g)} | ${mmm(g.map((r) => r.serverCpuUsPerOp))} |`);
		}
		L.push("");
	}
	if (lk("schedule").length) {
		L.push("## Schedule lateness (wall time when the action runs − scheduled_at), ms: median [min..max] across repetitions", "");
		L.push("| variant | target | reps | p50 | p90 | p99 | max | fired − scheduled p50 / p99 / max | events run / planned | late > 10 ms / > 50 ms | load actions/s | errors | consistent | server %core | other procs %core |");
		L.push("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
		for (const k of lk("schedule")) {
			const [, v, t] = k.split("\u0000");
			const g = lgroups.get(k);
			const fm = (f) => mmm(g.map((r) => r.firedMinusScheduledMs?.[f]));
			L.push(`| ${v} | ${t} | ${g.length} | ${mmm(g.map((r) => r.latencyMs?.p50))} | ${mmm(g.map((r) => r.latencyMs?.p90))} | ${mmm(g.map((r) => r.latencyMs?.p99))} | ${mmm(g.map((r) => r.latencyMs?.max))} | ${fm("p50")} / ${fm("p99")} / ${fm("max")} | ${g.reduce((a, r) => a + (r.fired ?? 0), 0)} / ${g.reduce((a, r) => a + (r.events ?? 0), 0)} | ${g.some((r) => r.lateOver10ms !== undefined) ? `${g.reduce((a, r) => a + (r.lateOver10ms ?? 0), 0)} / ${g.reduce((a, r) => a + (r.lateOver50ms ?? 0), 0)}` : ""} | ${mmm(g.map((r) => r.loadThroughput))} | ${errCol(g)} | ${okCol(g)} | ${mmm(g.map((r) => r.serverCpuPctCore))} | ${mmm(g.map((r) => r.otherCpuPctCore))} |`);
		}
		L.push("");
	}
	if (lk("queue").length) {
		L.push("## Queue, one consumer (send to completion, enqueue only): median [min..max] across repetitions", "");
		L.push(
			"msgs/s and latency: acknowledged sends in the window. wait=false: consumer msgs/s while the senders ran, backlog at the window's end, " +
				"time from the window's end until the consumer had completed every message and its rate meanwhile. CPU per message over the window, " +
				"and over the whole run (warm-up to drained: every message enqueued and consumed).",
			"",
		);
		L.push("| variant | target | reps | msgs/s | p50 ms | p90 ms | p99 ms | max ms | errors | consistent | server CPU µs/msg | by process µs/msg | CPU µs/msg incl. consume | consumer msgs/s while sending | backlog at end | drain s | drain msgs/s | server %core | harness µs/op | other procs %core |");
		L.push("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
		for (const k of lk("queue")) {
			const [, v, t] = k.split("\u0000");
			const g = lgroups.get(k);
			const f = (field) => mmm(g.map((r) => r[field]));
			const comms = [...new Set(g.flatMap((r) => Object.keys(r.serverCpuUsPerOpByProc ?? {})))];
			const byProc = comms.length > 1 ? comms.map((c) => `${c} ${num(med(g.map((r) => r.serverCpuUsPerOpByProc?.[c] ?? 0)))}`).join(", ") : "";
			L.push(
				`| ${v} | ${t} | ${g.length} | ${f("throughput")} | ${mmm(g.map((r) => r.latencyMs?.p50))} | ${mmm(g.map((r) => r.latencyMs?.p90))} | ${mmm(g.map((r) => r.latencyMs?.p99))} | ${mmm(g.map((r) => r.latencyMs?.max))} | ` +
					`${errCol(g)} | ${okCol(g)} | ${f("serverCpuUsPerOp")} | ${byProc} | ${f("wholeCpuUsPerMsg")} | ${f("consumedPerS")} | ${f("backlogAtEnd")} | ${f("drainS")} | ${f("drainPerS")} | ` +
					`${f("serverCpuPctCore")} | ${f("harnessCpuUsPerOp")} | ${f("otherCpuPctCore")} |`,
			);
		}
		L.push("");
	}
	if (lk("mem").length) {
		L.push("## Server memory per actor over HTTP: median [min..max] across repetitions", "");
		L.push("| variant | target | reps | KiB per actor | by process KiB | RSS before MiB | RSS after MiB | errors | consistent |");
		L.push("|---|---|---|---|---|---|---|---|---|");
		for (const k of lk("mem")) {
			const [, v, t] = k.split("\u0000");
			const g = lgroups.get(k);
			const comms = [...new Set(g.flatMap((r) => Object.keys(r.kibPerActorByProc ?? {})))];
			const byProc = comms.length > 1 ? comms.map((c) => `${c} ${num(med(g.map((r) => r.kibPerActorByProc?.[c] ?? 0)))}`).join(", ") : "";
			L.push(`| ${v} | ${t} | ${g.length} | ${mmm(g.map((r) => r.kibPerActor))} | ${byProc} | ${mmm(g.map((r) => r.rssBeforeMiB))} | ${mmm(g.map((r) => r.rssAwakeMiB ?? r.rssAsleepMiB))} | ${errCol(g)} | ${okCol(g)} |`);
		}
		L.push("");
	}

	// ---- engine-hosted targets: runtime process vs rivet-engine CPU, and which engine ran
	if (hasEngine) {
		const eTargets = targetOrder.filter((t) => rows.some((r) => r.target === t && engineUs(r) !== undefined));
		const eKeys = [...groups.keys(), ...[...new Set(rows.filter((r) => r.scenario === "queue").map((r) => `queue\u0000${r.variant}\u0000${r.target}`))]];
		const variants = [];
		for (const k of eKeys) {
			const [sc, v] = k.split("\u0000");
			if (!variants.some(([a, b]) => a === sc && b === v)) variants.push([sc, v]);
		}
		variants.sort(([sa, va], [sb, vb]) => rows.findIndex((r) => r.scenario === sa && r.variant === va) - rows.findIndex((r) => r.scenario === sb && r.variant === vb));
		const qget = (sc, v, t) => rows.filter((r) => r.scenario === sc && r.variant === v && r.target === t);
		L.push("## Server CPU per op: runtime process vs rivet-engine (µs, median [min..max] across repetitions)", "");
		L.push("Runtime process: node for official*, python for ours-engine*; the engine is counted apart. Per op as in the table above (per action, cold start, WS connection, fan-out round, queue message).", "");
		L.push(`| scenario | variant | ${eTargets.map((t) => `${t} runtime | ${t} engine`).join(" | ")} |`);
		L.push(`|---|---|${eTargets.map(() => "---|---").join("|")}|`);
		for (const [sc, v] of variants) {
			const cells = eTargets.map((t) => {
				const g = qget(sc, v, t);
				return `${mmm(g.map(runtimeUs))} | ${mmm(g.map(engineUs))}`;
			});
			if (cells.every((c) => c === " | ")) continue;
			L.push(`| ${sc} | ${v} | ${cells.join(" | ")} |`);
		}
		L.push("");
		const fps = rows.filter((r) => r.scenario === "start" && r.engine);
		if (fps.length) {
			L.push("## Engine of each run", "");
			const ref = fps[0].engine;
			const same = (e) => e.sha256 === ref.sha256 && JSON.stringify(e.args) === JSON.stringify(ref.args);
			const diff = (e) => {
				const keys = [...new Set([...Object.keys(ref.settings), ...Object.keys(e.settings)])].sort();
				return keys.filter((k) => ref.settings[k] !== e.settings[k]).map((k) => `${k}=${e.settings[k] ?? "(unset)"}`);
			};
			L.push(`Reference: ${fps[0].target} rep ${fps[0].rep}: \`${ref.binary}\` ${ref.args.join(" ")} (npm ${ref.version}, sha256 ${ref.sha256.slice(0, 16)}…); settings ${Object.entries(ref.settings).map(([k, v]) => `${k}=${v}`).join(" ")}`, "");
			L.push("| target | rep | binary | same sha256 + args | settings that differ from the reference (ports, data dir excluded) |", "|---|---|---|---|---|");
			for (const r of fps) L.push(`| ${r.target} | ${r.rep} | ${r.engine.binary.replace(/.*\/(bench|tests\/engine)\//, "$1/")} | ${same(r.engine) ? "yes" : "NO"} | ${diff(r.engine).join(" ") || "none"} |`);
			L.push("");
		}
	}

	// ---- start-up, gates, failures, inconsistencies
	const starts = rows.filter((r) => r.scenario === "start" && r.readyMs !== undefined);
	if (starts.length) {
		L.push("## Server start → first answer (ms)", "");
		L.push("| target | reps | ms |", "|---|---|---|");
		for (const t of targetOrder) {
			const g = starts.filter((r) => r.target === t);
			if (g.length) L.push(`| ${t} | ${g.length} | ${mmm(g.map((r) => r.readyMs))} |`);
		}
		L.push("");
	}
	const notes = [];
	for (const r of rows) {
		if (r.error) notes.push(`- rep ${r.rep} ${r.target} ${r.scenario}: ${r.error.split("\n")[0]}`);
		if (r.scenario === "gate") notes.push(`- rep ${r.rep} ${r.target}: waited ${num(r.waitedMs)} ms for a new actor to answer before a measurement`);
		if (r.consistent === false)
			notes.push(`- rep ${r.rep} ${r.target} ${r.scenario} ${r.variant}: INCONSISTENT ${(r.consistencyProblems ?? []).join("; ") || r.firstError}`);
		else if (r.firstError) notes.push(`- rep ${r.rep} ${r.target} ${r.scenario} ${r.variant}: first error: ${r.firstError.slice(0, 200)}`);
	}
	if (notes.length) L.push("## Notes", "", ...notes, "");
	return L.join("\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
	const dir = process.argv[2];
	if (!dir) {
		console.error("usage: node bench/harness/report.mjs OUTDIR");
		process.exit(2);
	}
	let env = null;
	try {
		env = JSON.parse(fs.readFileSync(path.join(dir, "env.json"), "utf8"));
	} catch {}
	process.stdout.write(renderSummary(fs.readFileSync(path.join(dir, "results.jsonl"), "utf8"), env));
}
