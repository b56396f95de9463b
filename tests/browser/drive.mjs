#!/usr/bin/env node
// Drive the @rivetkit/react page (dist/) in headless Debian Chromium through playwright-core.
//
//   node drive.mjs --page http://127.0.0.1:PAGE/index.html --endpoint http://127.0.0.1:SERVER
//                  --chromium /usr/bin/chromium --user-data-dir /tmp/x [--encodings json,cbor,bare]
//
// The page and the server are on different origins, so the browser applies CORS to every HTTP
// request of the client (preflights included). Prints one `@@browser {json}` line per check and
// a closing `done` line; every value checked comes from the page's DOM, the browser's network
// events or the official Node client. One browser, one page per encoding. Exits 0 when every
// check passed.

import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { createClient } from "rivetkit/client";

const MARKER = "@@browser ";
const { values: opts } = parseArgs({
	options: {
		page: { type: "string" },
		endpoint: { type: "string" },
		chromium: { type: "string", default: "/usr/bin/chromium" },
		"user-data-dir": { type: "string" },
		encodings: { type: "string", default: "json,cbor,bare" },
		timeout: { type: "string", default: "90" },
	},
});
if (!opts.page || !opts.endpoint || !opts["user-data-dir"]) {
	console.error("usage: drive.mjs --page URL --endpoint URL --user-data-dir DIR [--chromium PATH]");
	process.exit(2);
}

const emit = (obj) => process.stdout.write(`${MARKER}${JSON.stringify(obj)}\n`);
const overall = setTimeout(() => {
	emit({ type: "fatal", error: `overall timeout of ${opts.timeout} s reached` });
	process.exit(3);
}, Number(opts.timeout) * 1000);
overall.unref();

const ENDPOINT = opts.endpoint.replace(/\/+$/, "");
const serverOrigin = new URL(ENDPOINT).origin;
const ENCODINGS = opts.encodings.split(",").map((e) => e.trim());
let failed = 0;

function assert(cond, msg) {
	if (!cond) throw new Error(msg);
}

const CHECKS = [
	"different_origins",
	"page_connects",
	"action_over_connection",
	"raw_fetch_cross_origin",
	"live_events_from_another_client",
	"cors_headers",
];

const context = await chromium.launchPersistentContext(opts["user-data-dir"], {
	executablePath: opts.chromium,
	headless: true,
	args: [
		"--headless",
		"--no-sandbox",
		"--disable-gpu",
		"--disable-quic",
		"--no-first-run",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
	],
});

async function runEncoding(encoding) {
	const key = `browser-${encoding}-${Date.now().toString(36)}`;
	const pageUrl = new URL(opts.page);
	pageUrl.searchParams.set("endpoint", ENDPOINT);
	pageUrl.searchParams.set("key", key);
	pageUrl.searchParams.set("encoding", encoding);
	const pageOrigin = pageUrl.origin;
	const console_ = [];
	const network = [];
	const preflights = [];
	const sockets = [];
	const check = async (name, fn) => {
		const t0 = performance.now();
		const notes = {};
		try {
			await fn(notes);
			emit({ type: "check", encoding, check: name, ok: true, ms: Math.round(performance.now() - t0), notes });
		} catch (err) {
			failed++;
			emit({ type: "check", encoding, check: name, ok: false, ms: Math.round(performance.now() - t0), error: String(err?.stack ?? err), notes, console: console_.slice(-20) });
		}
	};
	emit({ type: "start", encoding, checks: CHECKS, page: pageUrl.toString(), endpoint: ENDPOINT });
	const nodeClient = createClient({ endpoint: ENDPOINT, encoding });
	const page = await context.newPage();
	try {
		page.on("console", (msg) => console_.push(`${msg.type()}: ${msg.text()}`));
		page.on("pageerror", (err) => console_.push(`pageerror: ${err.message}`));
		page.on("websocket", (ws) => {
			const rec = { url: ws.url(), framesIn: 0, closed: false };
			sockets.push(rec);
			ws.on("framereceived", () => rec.framesIn++);
			ws.on("close", () => (rec.closed = true));
		});
		page.on("response", async (res) => {
			const req = res.request();
			if (new URL(req.url()).origin !== serverOrigin) return;
			const headers = await res.allHeaders().catch(() => ({}));
			network.push({
				method: req.method(),
				url: req.url(),
				status: res.status(),
				allowOrigin: headers["access-control-allow-origin"],
				allowCredentials: headers["access-control-allow-credentials"],
			});
		});
		// Preflights are not page requests in Playwright; the DevTools protocol reports them.
		const cdp = await context.newCDPSession(page);
		await cdp.send("Network.enable");
		const preflightIds = new Map();
		cdp.on("Network.requestWillBeSent", (e) => {
			if (e.type === "Preflight" || e.request?.method === "OPTIONS") {
				preflightIds.set(e.requestId, { method: e.request.method, url: e.request.url, headers: e.request.headers });
			}
		});
		cdp.on("Network.responseReceived", (e) => {
			const pre = preflightIds.get(e.requestId);
			if (!pre) return;
			const h = Object.fromEntries(Object.entries(e.response.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
			preflights.push({
				...pre,
				status: e.response.status,
				allowOrigin: h["access-control-allow-origin"],
				allowCredentials: h["access-control-allow-credentials"],
				allowHeaders: h["access-control-allow-headers"],
				allowMethods: h["access-control-allow-methods"],
			});
		});

		const text = async (sel) => ((await page.textContent(sel)) ?? "").trim();
		const waitText = async (sel, pred, what, ms = 8000) => {
			const deadline = performance.now() + ms;
			for (;;) {
				const value = await text(sel);
				if (pred(value)) return value;
				if (performance.now() > deadline) {
					throw new Error(`${what}: ${sel} is ${JSON.stringify(value)} after ${ms} ms; #error: ${JSON.stringify(await text("#error"))}; console: ${JSON.stringify(console_.slice(-8))}`);
				}
				await page.waitForTimeout(50);
			}
		};
		// Network records arrive asynchronously (the response listener awaits the headers), so a
		// page result can be rendered before its request is recorded: poll for the record.
		const recorded = async (list, pred, what, ms = 3000) => {
			const deadline = performance.now() + ms;
			for (;;) {
				const found = list.find(pred);
				if (found) return found;
				if (performance.now() > deadline) throw new Error(`${what} not recorded after ${ms} ms: ${JSON.stringify(list)}`);
				await page.waitForTimeout(25);
			}
		};
		const eventsShown = async () => (await page.$$eval("#events li", (lis) => lis.map((li) => li.textContent.trim())));

		await check("different_origins", async (notes) => {
			notes.pageOrigin = pageOrigin;
			notes.serverOrigin = serverOrigin;
			assert(pageOrigin !== serverOrigin, "page and server share an origin");
		});

		await page.goto(pageUrl.toString(), { waitUntil: "load" });

		await check("page_connects", async (notes) => {
			notes.status = await waitText("#status", (v) => v === "connected", "connStatus");
			notes.actorId = await waitText("#actor-id", (v) => v.length > 0, "actor id");
			const who = await nodeClient.chat.getOrCreate([key]).whoami();
			assert(who.actorId === notes.actorId, `page actor ${notes.actorId} != ${who.actorId} seen by the Node client`);
			const connect = sockets.find((s) => new URL(s.url).pathname.endsWith("/connect"));
			assert(connect, `no /connect socket: ${JSON.stringify(sockets)}`);
			notes.socket = connect.url;
		});

		await check("action_over_connection", async (notes) => {
			await page.click("#inc-conn");
			notes.result = await waitText("#result-conn", (v) => v !== "", "increment over the connection");
			assert(notes.result === "1", `increment(1) returned ${notes.result}`);
			await page.click("#whoami");
			const who = JSON.parse(await waitText("#result-who", (v) => v !== "", "whoami"));
			notes.who = who;
			assert(JSON.stringify(who.params) === JSON.stringify({ from: "browser" }), `params ${JSON.stringify(who.params)}`);
			assert(who.transient === false, "whoami ran on the socket connection");
		});

		await check("raw_fetch_cross_origin", async (notes) => {
			await page.click("#fetch");
			const result = JSON.parse(await waitText("#result-http", (v) => v !== "", "raw fetch"));
			notes.result = result;
			assert(result.status === 200, `status ${result.status}`);
			assert(result.body.count === 1, `count seen by on_request: ${result.body.count}`);
			assert(result.body.origin === pageOrigin, `Origin seen by on_request: ${result.body.origin}`);
			assert(result.body.xTest === "from-page", `custom header seen by on_request: ${result.body.xTest}`);
			await recorded(network, (n) => n.method === "GET" && n.url.includes("/request/count"), "GET /request/count");
		});

		await check("live_events_from_another_client", async (notes) => {
			// The event of the page's own increment first, then two caused by the Node client.
			const deadline = performance.now() + 5000;
			const until = async (n) => {
				while ((await eventsShown()).length < n && performance.now() < deadline) await page.waitForTimeout(25);
				return await eventsShown();
			};
			const before = await until(1);
			assert(JSON.stringify(before) === JSON.stringify(["1"]), `event from the page's action: ${JSON.stringify(before)}`);
			const handle = nodeClient.chat.getOrCreate([key]);
			const values = [await handle.increment(10), await handle.increment(100)];
			assert(JSON.stringify(values) === "[11,111]", `Node increments returned ${values}`);
			notes.events = await until(3);
			assert(JSON.stringify(notes.events) === JSON.stringify(["1", "11", "111"]), `rendered events ${JSON.stringify(notes.events)}`);
			assert((await text("#status")) === "connected", "still connected");
		});

		await check("cors_headers", async (notes) => {
			notes.network = network;
			notes.preflights = preflights;
			const meta = network.find((n) => new URL(n.url).pathname.endsWith("/metadata"));
			assert(meta && meta.status === 200, `GET /metadata: ${JSON.stringify(meta)}`);
			for (const n of network.filter((x) => x.status < 400)) {
				assert(n.allowOrigin === pageOrigin, `${n.method} ${n.url}: access-control-allow-origin ${n.allowOrigin}, want ${pageOrigin}`);
				assert(n.allowCredentials === "true", `${n.method} ${n.url}: access-control-allow-credentials ${n.allowCredentials}`);
			}
			const pre = await recorded(preflights, (p) => p.url.includes("/request/count"), "the preflight of the raw fetch (DevTools protocol)");
			assert(pre.status >= 200 && pre.status < 300, `preflight status ${pre.status}`);
			assert(pre.allowOrigin === pageOrigin, `preflight allow-origin ${pre.allowOrigin}`);
			assert(pre.allowCredentials === "true", `preflight allow-credentials ${pre.allowCredentials}`);
		});
	} catch (err) {
		failed++;
		emit({ type: "fatal", encoding, error: String(err?.stack ?? err), console: console_.slice(-20) });
	} finally {
		emit({ type: "end", encoding, console: console_.slice(-30) });
		await page.close().catch(() => {});
		await Promise.race([nodeClient.dispose(), new Promise((r) => setTimeout(r, 3000))]).catch(() => {});
	}
}

try {
	for (const encoding of ENCODINGS) await runEncoding(encoding);
} catch (err) {
	failed++;
	emit({ type: "fatal", error: String(err?.stack ?? err) });
} finally {
	await Promise.race([context.close(), new Promise((r) => setTimeout(r, 10_000))]).catch(() => {});
}
emit({ type: "done", failed });
process.exit(failed ? 1 : 0);
