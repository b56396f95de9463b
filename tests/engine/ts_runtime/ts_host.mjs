#!/usr/bin/env node
// The official TypeScript runtime (npm rivetkit 2.3.19, native runtime @rivetkit/rivetkit-napi)
// hosting a `counter` actor on an external Rivet Engine in envoy mode ("serverful").
//
//   RIVET_RUN_SERVICES=0 node ts_host.mjs --endpoint http://127.0.0.1:PORT --pool POOL \
//       [--version 1] [--namespace default] [--modules DIR] [--grace-ms 20000]
//
// --version is the deployment version (the engine only places actors on the envoys with the
// highest version of a pool: give both runtimes the same one). RIVET_RUN_SERVICES=0 keeps the
// runtime from starting its "Services" actor host next to a loopback engine. The runtime
// upserts the pool's runner config itself (PUT /runner-configs/POOL).
//
// The actor is the twin of tests/engine/compat_counter_app.py (same action names, arguments and
// results; `runtime` answers "typescript" here). The packages come from the compat suite's
// install (tests/compat/node_modules, pinned by its lockfile); --modules points elsewhere.
//
// stdout carries one JSON line per lifecycle step, for the pytest side:
//   {"event":"ready","envoy":{...}}   the envoy registered with the engine (startAndWait())
//   {"event":"stopped"}               after SIGTERM/SIGINT: every actor drained, about to exit 0
//   {"event":"fatal","error":"..."}   startup failed (exit status 1)
// The runtime's own log lines (`ts=... level=...`) are interleaved; none starts with {"event":.

import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const HERE = dirname(fileURLToPath(import.meta.url));

const { values: opts } = parseArgs({
	options: {
		endpoint: { type: "string" },
		pool: { type: "string" },
		version: { type: "string", default: "1" },
		namespace: { type: "string", default: "default" },
		modules: { type: "string", default: resolve(HERE, "../../compat/node_modules") },
		"grace-ms": { type: "string", default: "20000" },
	},
});
if (!opts.endpoint || !opts.pool) {
	console.error("usage: ts_host.mjs --endpoint URL --pool POOL [--version N] [--namespace NS]");
	process.exit(2);
}

function emit(event) {
	process.stdout.write(`${JSON.stringify(event)}\n`);
}

// ESM resolves bare specifiers from this file's folder, which has no node_modules of its own:
// load the package's ESM entry (its `exports` map) from the given node_modules by path. Its own
// dependencies then resolve from there as usual.
async function importPackage(name, subpath = ".") {
	const dir = join(opts.modules, name);
	const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
	const entry = manifest.exports[subpath].import.default;
	return { module: await import(pathToFileURL(join(dir, entry)).href), version: manifest.version };
}

const toHex = (bytes) => Buffer.from(bytes).toString("hex");

const { module: rivetkit, version: rivetkitVersion } = await importPackage("rivetkit");
const { module: rivetkitDb } = await importPackage("rivetkit", "./db");
const { actor, setup } = rivetkit;
const { db } = rivetkitDb;

const counter = actor({
	state: { count: 0 },
	db: db({
		onMigrate: async (database) => {
			await database.execute(
				"CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
			);
		},
	}),
	actions: {
		increment: (c, n) => {
			c.state.count += n;
			return c.state.count;
		},
		get: (c) => c.state.count,
		go_to_sleep: (c) => {
			c.sleep();
		},
		runtime: () => "typescript",
		put: (c, key, value) => {
			c.state[key] = value;
		},
		snapshot: (c) => ({ ...c.state }),
		put_bytes: (c, key, hex) => {
			c.state[key] = new Uint8Array(Buffer.from(hex, "hex"));
		},
		get_hex: (c, key) => {
			const value = c.state[key];
			return value instanceof Uint8Array ? toHex(value) : null;
		},
		note_add: async (c, body) => {
			await c.db.execute("INSERT INTO notes (body) VALUES (?)", body);
			const rows = await c.db.execute("SELECT count(*) AS n FROM notes");
			return Number(rows[0].n);
		},
		notes: async (c) => {
			const rows = await c.db.execute("SELECT body FROM notes ORDER BY id");
			return rows.map((row) => row.body);
		},
		kv_put: async (c, key, value) => {
			await c.kv.put(key, value);
		},
		kv_get: async (c, key) => await c.kv.get(key),
		queue_send: async (c, name, body) => {
			await c.queue.send(name, body);
		},
		queue_take: async (c, name) => {
			const message = await c.queue.tryNext({ names: [name] });
			return message ? { name: message.name, body: message.body } : null;
		},
		schedule_increment: async (c, delayMs, n) => {
			await c.schedule.after(delayMs, "increment", n);
		},
		// TypeScript only: the stored database as the official runtime reads it (its SQL may read
		// the _rivet_* tables; BLOBs are returned as hex).
		internals: async (c) => {
			const q = (sql) => c.db.execute(sql);
			const one = async (sql) => (await q(sql))[0] ?? null;
			return {
				schema: await q(
					"SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
				),
				tables: await q("SELECT name, type, ncol, wr, strict FROM pragma_table_list"),
				meta: await q("SELECT key, hex(value) AS value FROM _rivet_meta ORDER BY key"),
				actor: await one(
					"SELECT id, has_initialized, typeof(input) AS input_type, hex(input) AS input FROM _rivet_actor",
				),
				runtime: await one(
					"SELECT id, last_pushed_alarm, inspector_token, queue_next_id FROM _rivet_runtime",
				),
				state: await one("SELECT hex(state) AS state FROM _rivet_actor_state"),
				user_kv: await q(
					"SELECT hex(key) AS key, hex(value) AS value FROM _rivet_user_kv ORDER BY key",
				),
				schedule: await q(
					"SELECT event_id, trigger_at, action, hex(args) AS args, kind FROM _rivet_schedule_events",
				),
				pragmas: {
					page_size: (await one("PRAGMA page_size")).page_size,
					auto_vacuum: (await one("PRAGMA auto_vacuum")).auto_vacuum,
					encoding: (await one("PRAGMA encoding")).encoding,
					user_version: (await one("PRAGMA user_version")).user_version,
				},
				integrity: (await one("PRAGMA integrity_check")).integrity_check,
			};
		},
		// TypeScript only: one table's columns and indexes (with their key columns and order).
		columns: async (c, table) => ({
			columns: await c.db.execute("SELECT * FROM pragma_table_xinfo(?) ORDER BY cid", table),
			indexes: await c.db.execute(
				`SELECT l.name, l."unique", l.partial, l.origin,
				        (SELECT group_concat(coalesce(x.name, '') || ':' || x.desc || ':' || x.key, ',')
				           FROM pragma_index_xinfo(l.name) x) AS cols
				   FROM pragma_index_list(?) l ORDER BY l.name`,
				table,
			),
		}),
	},
});

const registry = setup({
	use: { counter },
	endpoint: opts.endpoint,
	namespace: opts.namespace,
	envoy: { poolName: opts.pool, version: Number(opts.version) },
	noWelcome: true,
	// This script owns the signals: drain, report, exit 0 (rivetkit would re-raise the signal).
	shutdown: { gracePeriodMs: Number(opts["grace-ms"]), disableSignalHandlers: true },
});

let stopping = false;
async function stop() {
	if (stopping) return;
	stopping = true;
	await registry.shutdown();
	emit({ event: "stopped" });
	process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

try {
	await registry.startAndWait();
} catch (error) {
	emit({ event: "fatal", error: String(error?.stack ?? error) });
	process.exit(1);
}
emit({
	event: "ready",
	envoy: {
		rivetkit: rivetkitVersion,
		endpoint: opts.endpoint,
		namespace: opts.namespace,
		pool: opts.pool,
		version: Number(opts.version),
	},
});
