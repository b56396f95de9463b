#!/usr/bin/env node
// Compatibility scenarios of client-protocol.md §15, driven by the official `createClient` from
// `rivetkit/client` against our server: 1-12 here, the connection and raw-handler scenarios
// (13-19, 21-26, 29) in scenarios_conn.mjs, the queues (27) in scenarios_queue.mjs. Scenario 20
// (server restart) is restart.mjs.
//
//   node scenarios.mjs --endpoint http://127.0.0.1:6420 --encoding bare [--scenarios 1,2,3]
//                      [--prefixed-endpoint http://127.0.0.1:6421/api/rivet] [--timeout 90]
//                      [--pool default]
//
// `--pool` is the pool (runner name) the clients ask for (`rvt-runner`, `runner_name_selector`):
// "default" for our embedded server, the test's own pool when the endpoint is a Rivet Engine.
//
// Prints one `@@compat {json}` line per check (see lib.mjs); exits 0 when every check passed,
// 1 when some failed, 2 on bad usage, 3 on the overall timeout.

import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";
import { ActorError, createClient } from "rivetkit/client";
import {
	allExchanges,
	assert,
	assertBytes,
	assertErrorCode,
	bareData,
	base64UrlDecode,
	cborDecode,
	cborEncode,
	concatBytes,
	currentExchanges,
	decodeErrorBody,
	describeError,
	describeRaw,
	describeType,
	emit,
	exchangeBodies,
	exchangesFor,
	isRetryableCode,
	onlyExchange,
	rawRequest,
	readBareData,
	rejects,
	reqJson,
	resJson,
	runScenario,
} from "./lib.mjs";
import { connScenarios } from "./scenarios_conn.mjs";
import { queueScenarios } from "./scenarios_queue.mjs";

const { values: opts } = parseArgs({
	options: {
		endpoint: { type: "string" },
		encoding: { type: "string" },
		scenarios: { type: "string", default: "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,21,22,23,24,25,26,27,29" },
		"prefixed-endpoint": { type: "string" },
		pool: { type: "string", default: "default" },
		timeout: { type: "string", default: "90" },
		"check-timeout": { type: "string", default: "20" },
	},
});

const ENCODING = opts.encoding;
if (!opts.endpoint || !["json", "cbor", "bare"].includes(ENCODING)) {
	console.error("usage: scenarios.mjs --endpoint URL --encoding json|cbor|bare [--scenarios 1,2] [--prefixed-endpoint URL]");
	process.exit(2);
}
const EP = opts.endpoint.replace(/\/+$/, "");
const EP_URL = new URL(EP);
const PREFIXED = opts["prefixed-endpoint"]?.replace(/\/+$/, "");
const POOL = opts.pool;
const SELECTED = opts.scenarios.split(",").map((s) => Number(s.trim()));
const CHECK_TIMEOUT_MS = Number(opts["check-timeout"]) * 1000;

const overall = setTimeout(() => {
	emit({ type: "fatal", encoding: ENCODING, error: `overall timeout of ${opts.timeout} s reached` });
	process.exit(3);
}, Number(opts.timeout) * 1000);
overall.unref();

process.on("unhandledRejection", (err) => {
	emit({ type: "unhandled_rejection", encoding: ENCODING, error: describeError(err) });
});

// A token unique to this process, so keys never collide across encodings or runs.
const U = `${ENCODING}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

const clients = [];
function client(extra = {}) {
	const c = createClient({ endpoint: EP, encoding: ENCODING, poolName: POOL, ...extra });
	clients.push(c);
	return c;
}

const gw = (name) => `${EP_URL.pathname.replace(/\/$/, "")}/gateway/${name}`;
const eq = (actual, expected, msg) => assert.deepStrictEqual(actual, expected, msg);
const isNil = (v) => v === null || v === undefined;

function searchEntries(url) {
	return [...new URL(url).searchParams.entries()];
}

/** Plain-fetch JSON action call at `base` + `/action/NAME`, keeping base's query (§4.3 usage). */
async function plainJsonAction(base, name, args = []) {
	const url = new URL(base);
	url.pathname = `${url.pathname.replace(/\/$/, "")}/action/${encodeURIComponent(name)}`;
	const res = await fetch(url, {
		method: "POST",
		headers: { "x-rivet-encoding": "json", "content-type": "application/json" },
		body: JSON.stringify({ args }),
	});
	const text = await res.text();
	return { status: res.status, text, url: url.toString() };
}

/** Rotate alphanumerics of the first 8 characters: an id of the same shape that does not exist. */
function mutateId(id) {
	const rot = (ch) => {
		if (ch >= "0" && ch <= "9") return String((Number(ch) + 1) % 10);
		if (ch >= "a" && ch <= "z") return String.fromCharCode(((ch.charCodeAt(0) - 97 + 1) % 26) + 97);
		if (ch >= "A" && ch <= "Z") return String.fromCharCode(((ch.charCodeAt(0) - 65 + 1) % 26) + 65);
		return ch;
	};
	return [...id].map((ch, i) => (i < 8 ? rot(ch) : ch)).join("");
}

// ---------------------------------------------------------------------------------------------
// 1. Bootstrap: /metadata, path prefix, URL auth

function scenario1() {
	const checks = [
		[
			"metadata_before_first_call",
			async (notes) => {
				const c = client();
				const h = c.counter.getOrCreate([`s1-${U}`]);
				eq(await h.increment(1), 1);
				const metas = allExchanges.filter((ex) => {
					const u = new URL(ex.url);
					return u.origin === EP_URL.origin && u.pathname === "/metadata";
				});
				assert.equal(metas.length, 1, `expected one GET /metadata (first attempt succeeding), saw ${metas.length}`);
				const meta = metas[0];
				eq(meta.method, "GET");
				eq(searchEntries(meta.url), [["namespace", "default"]]);
				eq(meta.status, 200, "GET /metadata status");
				assert.match(meta.resHeaders["content-type"] ?? "", /application\/json/, "GET /metadata content-type");
				const body = await resJson(meta);
				assert.ok(body !== null && typeof body === "object" && !Array.isArray(body), "metadata body must be an object");
				notes.metadata = body;
				const call = onlyExchange(`${gw("counter")}/action/increment`, "POST");
				assert.equal(new URL(call.url).origin, EP_URL.origin, "client must stay on our origin after /metadata");
				assert.ok(meta.tEnd <= call.t0, "the action went out before /metadata answered");
			},
		],
		[
			"url_auth_namespace_and_token",
			async (notes) => {
				// `//` gives this endpoint its own metadata cache entry in the client; §1.1: duplicate
				// slashes collapse, so the requests go to the same paths.
				const authEp = `${EP_URL.protocol}//ns:tok@${EP_URL.host}${EP_URL.pathname.replace(/\/$/, "")}//`;
				const c = createClient({ endpoint: authEp, encoding: ENCODING, poolName: POOL });
				clients.push(c);
				const key = [`s1a-${U}`];
				const who = await c.counter.getOrCreate(key).whoami();
				eq(who.key, key);
				eq(who.name, "counter");
				const meta = onlyExchange("/metadata", "GET");
				eq(searchEntries(meta.url), [["namespace", "ns"]]);
				eq(meta.reqHeaders.authorization, "Bearer tok");
				eq(meta.status, 200);
				const call = onlyExchange(`${gw("counter")}/action/whoami`, "POST");
				const params = new URL(call.url).searchParams;
				eq(params.get("rvt-namespace"), "ns");
				eq(params.get("rvt-token"), "tok");
				eq(call.reqHeaders["x-rivet-token"], "tok");
				notes.actorId = who.actorId;
			},
		],
	];
	if (PREFIXED) {
		const P = new URL(PREFIXED);
		const base = P.pathname.replace(/\/$/, "");
		checks.push([
			"path_prefix_endpoint",
			async (notes) => {
				const c = createClient({ endpoint: PREFIXED, encoding: ENCODING, poolName: POOL });
				clients.push(c);
				const h = c.counter.getOrCreate([`s1p-${U}`]);
				eq(await h.increment(1), 1);
				eq(await h.increment(1), 2);
				const meta = onlyExchange(`${base}/metadata`, "GET");
				eq(meta.status, 200, "prefixed GET /metadata status");
				eq(searchEntries(meta.url), [["namespace", "default"]]);
				const calls = exchangesFor(`${base}/gateway/counter/action/increment`, "POST");
				eq(calls.length, 2);
				const created = await c.counter.create([`s1pc-${U}`], { input: { start: 3 } });
				const id = await created.resolve();
				onlyExchange(`${base}/actors`, "POST");
				eq(await created.getCount(), 3);
				onlyExchange(`${base}/gateway/${encodeURIComponent(id)}/action/getCount`, "POST");
				eq(await created.getGatewayUrl(), `${P.origin}${base}/gateway/${encodeURIComponent(id)}`);
				eq(await c.counter.get([`s1pc-${U}`]).resolve(), id);
				const lookup = onlyExchange(`${base}/actors`, "GET");
				eq(lookup.status, 200);
				notes.actorId = id;
			},
		]);
	} else {
		checks.push([
			"path_prefix_endpoint",
			async () => assert.fail("no --prefixed-endpoint given: the prefixed server did not start"),
		]);
	}
	return checks;
}

// ---------------------------------------------------------------------------------------------
// 2. getOrCreate: query-form URL, stable actors, key round-trips

function scenario2() {
	const c = client();
	const ids = {};
	const keyCases = [
		["empty", []],
		["escaped_slash_backslash", ["a/b", "c\\d"]],
		["empty_part", ["", "e"]],
		["space_unicode", ["sp ace", "ü"]],
	];
	const checks = [
		[
			"query_form_url_and_same_actor",
			async () => {
				const key = `s2-${U}`;
				eq(await c.counter.getOrCreate([key]).increment(1), 1);
				eq(await c.counter.getOrCreate([key]).increment(1), 2);
				const calls = exchangesFor(`${gw("counter")}/action/increment`, "POST");
				eq(calls.length, 2);
				for (const call of calls) {
					eq(searchEntries(call.url), [
						["rvt-namespace", "default"],
						["rvt-method", "getOrCreate"],
						["rvt-runner", POOL],
						["rvt-key", key],
						["rvt-crash-policy", "sleep"],
					]);
					eq(call.status, 200);
				}
				eq(await c.counter.getOrCreate([key]).getCount(), 2);
			},
		],
	];
	for (const [label, key] of keyCases) {
		checks.push([
			`key_roundtrip_${label}`,
			async (notes) => {
				const first = await c.counter.getOrCreate(key).whoami();
				const second = await c.counter.getOrCreate([...key]).whoami();
				eq(first.key, key, "c.key as seen by the actor");
				eq(first.name, "counter");
				eq(second.actorId, first.actorId, "same key must address the same actor");
				ids[label] = first.actorId;
				notes.rvtKey = new URL(currentExchanges()[0].url).searchParams.get("rvt-key");
			},
		]);
	}
	checks.push([
		"keys_address_distinct_actors",
		async () => {
			const got = keyCases.map(([label]) => ids[label]);
			assert.ok(
				got.every((id) => typeof id === "string"),
				"an earlier key check failed",
			);
			eq(new Set(got).size, got.length, `actor ids must differ per key: ${JSON.stringify(ids)}`);
		},
	]);
	if (ENCODING === "json") {
		checks.push([
			"gateway_validates_rvt_params",
			async () => {
				// §4.2 "Server rules observed on the engine (reproduce for compatibility)".
				const base = `${EP}/gateway/counter/action/getCount`;
				const ok = `rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=${POOL}&rvt-key=s2v-${U}`;
				const cases = [
					["unknown rvt param", `?${ok}&rvt-bogus=1`, "guard.query_invalid_params"],
					["duplicate rvt param", `?${ok}&rvt-key=other`, "guard.query_duplicate_param"],
					["get with rvt-input", `?rvt-namespace=default&rvt-method=get&rvt-key=x&rvt-input=oA`, "guard.query_get_disallowed_params"],
					["get with rvt-runner", `?rvt-namespace=default&rvt-method=get&rvt-key=x&rvt-runner=${POOL}`, "guard.query_get_disallowed_params"],
					["getOrCreate without runner", `?rvt-namespace=default&rvt-method=getOrCreate&rvt-key=x`, "guard.query_missing_pool"],
					["bad base64url input", `?${ok}&rvt-input=*!*`, "guard.query_invalid_base64_input"],
					["non-CBOR input", `?${ok}&rvt-input=_w`, "guard.query_invalid_cbor_input"],
					["unknown namespace", `?rvt-namespace=nope-${U}&rvt-method=getOrCreate&rvt-runner=${POOL}&rvt-key=x`, "namespace.not_found"],
				];
				const problems = [];
				for (const [label, query, expected] of cases) {
					const res = await rawRequest(base + query, { headers: { "x-rivet-encoding": "json" }, body: Buffer.from('{"args":[]}') });
					let got;
					try {
						const body = JSON.parse(new TextDecoder().decode(res.body));
						got = `${body.group}.${body.code}`;
					} catch {
						got = "<not a JSON envelope>";
					}
					if (res.status !== 400 || got !== expected) {
						problems.push(`${label}: expected 400 ${expected}, got ${res.status} ${got} ${JSON.stringify(describeRaw(res))}`);
					}
				}
				const tokenInPath = await rawRequest(`${EP}/gateway/counter@tok/action/getCount?${ok}`, {
					headers: { "x-rivet-encoding": "json" },
					body: Buffer.from('{"args":[]}'),
				});
				if (tokenInPath.status !== 400 || !new TextDecoder().decode(tokenInPath.body).includes("query_path_token_syntax")) {
					problems.push(`@token in a query path: expected 400 guard.query_path_token_syntax, got ${JSON.stringify(describeRaw(tokenInPath))}`);
				}
				const pool = await rawRequest(`${base}?rvt-namespace=default&rvt-method=getOrCreate&rvt-pool=${POOL}&rvt-key=s2v-${U}`, {
					headers: { "x-rivet-encoding": "json" },
					body: Buffer.from('{"args":[]}'),
				});
				if (pool.status !== 200) problems.push(`rvt-pool accepted as runner alias: got ${JSON.stringify(describeRaw(pool))}`);
				assert.ok(problems.length === 0, problems.join("\n"));
			},
		]);
	}
	checks.push([
		"comma_key_splits_like_official",
		async () => {
			const a = `x${U}`;
			const viaComma = await c.counter.getOrCreate([`${a},y`]).whoami();
			eq(viaComma.key, [a, "y"], "rvt-key is split on ',' (§4.2)");
			const viaParts = await c.counter.getOrCreate([a, "y"]).whoami();
			eq(viaParts.actorId, viaComma.actorId);
		},
	]);
	return checks;
}

// ---------------------------------------------------------------------------------------------
// 3. getOrCreate with input

function scenario3() {
	const c = client();
	const key = [`s3-${U}`];
	return [
		[
			"create_with_input_reaches_create_state",
			async () => {
				const h = c.counter.getOrCreate(key, { createWithInput: { start: 42 } });
				eq(await h.getInput(), { start: 42 });
				eq(await h.getCount(), 42);
				const first = exchangesFor(`${gw("counter")}/action/getInput`, "POST")[0];
				const sent = new URL(first.url).searchParams.get("rvt-input");
				eq(cborDecode(base64UrlDecode(sent)), { start: 42 }, "rvt-input the client sent");
			},
		],
		[
			"existing_actor_ignores_input",
			async () => {
				const h = c.counter.getOrCreate(key, { createWithInput: { start: 7 } });
				eq(await h.getCount(), 42);
				eq(await h.getInput(), { start: 42 });
				eq(await h.increment(1), 43);
			},
		],
		[
			"no_input_is_nil",
			async (notes) => {
				const h = c.counter.getOrCreate([`s3n-${U}`]);
				const input = await h.getInput();
				assert.ok(isNil(input), `input without createWithInput should be null/undefined, got ${JSON.stringify(input)}`);
				notes.input = input === undefined ? "undefined" : input;
				eq(await h.getCount(), 0);
			},
		],
		[
			"structured_and_scalar_input",
			async () => {
				const input = { start: 5, nested: { list: [1, "two", true, null, 2.5], s: "ü ✓" } };
				eq(await c.counter.getOrCreate([`s3s-${U}`], { createWithInput: input }).getInput(), input);
				eq(await c.counter.getOrCreate([`s3s-${U}`]).getCount(), 5);
				eq(await c.counter.getOrCreate([`s3t-${U}`], { createWithInput: "just text" }).getInput(), "just text");
			},
		],
	];
}

// ---------------------------------------------------------------------------------------------
// 4. create() + getForId()

function scenario4() {
	const c = client();
	const key = [`s4-${U}`, "second"];
	const state = {};
	return [
		[
			"create_posts_actors",
			async (notes) => {
				const h = await c.counter.create(key, { input: { start: 10 } });
				const post = onlyExchange(`${EP_URL.pathname.replace(/\/$/, "")}/actors`, "POST");
				eq(searchEntries(post.url), [["namespace", "default"]]);
				const sent = await reqJson(post);
				eq(sent.name, "counter");
				eq(sent.key, `s4-${U}/second`);
				eq(sent.runner_name_selector, POOL);
				eq(sent.crash_policy, "sleep");
				eq(cborDecode(new Uint8Array(Buffer.from(sent.input, "base64"))), { start: 10 });
				eq(post.status, 200, "POST /actors status");
				const body = await resJson(post);
				assert.ok(body.actor && typeof body.actor === "object", "response must have an `actor` object");
				const actor = body.actor;
				assert.equal(typeof actor.actor_id, "string");
				assert.ok(actor.actor_id.length > 0 && !/[@/,]/.test(actor.actor_id), `unsafe actor id ${actor.actor_id}`);
				eq(actor.name, "counter");
				eq(actor.key, `s4-${U}/second`);
				assert.equal(typeof actor.create_ts, "number", "create_ts must be epoch ms");
				const id = await h.resolve();
				eq(id, actor.actor_id);
				eq(await h.getCount(), 10);
				const call = onlyExchange(`${gw(encodeURIComponent(id))}/action/getCount`, "POST");
				eq(new URL(call.url).search, "", "direct form carries no rvt-* params");
				state.id = id;
				notes.actor = actor;
			},
		],
		[
			"getForId_action",
			async () => {
				assert.ok(state.id, "create failed");
				const h = c.counter.getForId(state.id);
				eq(await h.increment(5), 15);
				eq((await h.whoami()).key, key);
				eq((await h.whoami()).actorId, state.id);
				onlyExchange(`${gw(encodeURIComponent(state.id))}/action/increment`, "POST");
			},
		],
		[
			"create_existing_key_duplicate_key",
			async (notes) => {
				assert.ok(state.id, "create failed");
				const err = await rejects(c.counter.create(key), "create() on an existing key");
				assertErrorCode(err, "actor", "duplicate_key");
				const post = onlyExchange(`${EP_URL.pathname.replace(/\/$/, "")}/actors`, "POST");
				eq(post.status, 400, "duplicate_key status");
				eq(err.metadata?.existing_actor_id, state.id, "metadata.existing_actor_id");
				notes.message = err.message;
			},
		],
	];
}

// ---------------------------------------------------------------------------------------------
// 5. resolve(): GET /actors and PUT /actors

function scenario5() {
	const c = client();
	const actorsPath = `${EP_URL.pathname.replace(/\/$/, "")}/actors`;
	return [
		[
			"get_resolve_uses_get_actors",
			async () => {
				const key = [`s5-${U}`];
				const who = await c.counter.getOrCreate(key).whoami();
				eq(await c.counter.get(key).resolve(), who.actorId);
				const lookup = onlyExchange(actorsPath, "GET");
				eq(Object.fromEntries(new URL(lookup.url).searchParams), { name: "counter", key: key[0], namespace: "default" });
				eq(lookup.status, 200);
				const body = await resJson(lookup);
				assert.ok(Array.isArray(body.actors), "`actors` must be a list");
				eq(body.actors.length, 1);
				eq(body.actors[0].actor_id, who.actorId);
				eq(body.actors[0].name, "counter");
			},
		],
		[
			"getOrCreate_resolve_put_created",
			async () => {
				const key = [`s5c-${U}`];
				const id = await c.counter.getOrCreate(key).resolve();
				eq(await c.counter.getOrCreate(key).resolve(), id);
				const puts = exchangesFor(actorsPath, "PUT");
				eq(puts.length, 2);
				const sent = await reqJson(puts[0]);
				eq(sent.name, "counter");
				eq(sent.key, key[0]);
				eq(sent.runner_name_selector, POOL);
				eq(sent.crash_policy, "sleep");
				const [first, second] = [await resJson(puts[0]), await resJson(puts[1])];
				eq(puts[0].status, 200);
				eq(first.created, true, "first PUT /actors creates");
				eq(first.actor?.actor_id, id);
				eq(second.created, false, "second PUT /actors finds the existing actor");
				eq(second.actor?.actor_id, id);
				eq((await c.counter.getForId(id).whoami()).key, key);
			},
		],
		[
			"resolve_agrees_with_query_form",
			async (notes) => {
				// PUT /actors (serialized key, §3.3) and the gateway query (rvt-key, §4.2) must
				// address the same actor; and the other way round with GET /actors.
				const cases = [
					[`a/b${U}`, "c\\d"],
					["", `e${U}`],
					[`sp ace${U}`, "ü"],
					[`s5q${U}`],
				];
				for (const key of cases) {
					const id = await c.counter.getOrCreate(key).resolve();
					const who = await c.counter.getOrCreate(key).whoami();
					eq(who.actorId, id, `key ${JSON.stringify(key)}: PUT /actors vs query form`);
					eq(who.key, key);
				}
				const key = [`g/${U}`, "h\\i"];
				const who = await c.counter.getOrCreate(key).whoami();
				eq(await c.counter.get(key).resolve(), who.actorId, "GET /actors vs query form");
				notes.sentKeys = exchangesFor(actorsPath, "PUT").length;
			},
		],
		[
			"get_resolve_missing_not_found",
			async () => {
				const err = await rejects(c.counter.get([`s5m-${U}`]).resolve(), "get(missing).resolve()");
				assertErrorCode(err, "actor", "not_found");
				const lookup = onlyExchange(actorsPath, "GET");
				if (lookup.status === 200) {
					eq((await resJson(lookup)).actors, [], "missing key: empty `actors` list");
				} else {
					const body = await resJson(lookup);
					eq(`${body.group}.${body.code}`, "actor.not_found");
				}
			},
		],
		[
			"resolved_handle_keeps_working",
			async () => {
				const h = c.counter.getOrCreate([`s5d-${U}`]);
				const id = await h.resolve();
				eq(await h.increment(2), 2);
				eq((await h.whoami()).actorId, id);
			},
		],
	];
}

// ---------------------------------------------------------------------------------------------
// 6. Not found

function scenario6() {
	const c = client();
	return [
		[
			"get_missing_retried_then_not_found",
			async (notes) => {
				const t0 = performance.now();
				const err = await rejects(c.counter.get([`s6-${U}`]).getCount(), "get(missing).getCount()");
				notes.ms = Math.round(performance.now() - t0);
				assertErrorCode(err, "actor", "not_found");
				assert.ok(err instanceof ActorError, `expected ActorError, got ${err?.name}`);
				const calls = exchangesFor(`${gw("counter")}/action/getCount`, "POST");
				notes.attempts = calls.length;
				assert.ok(calls.length > 1, `client should retry actor.not_found for get(), saw ${calls.length} request(s)`);
				for (const call of calls) {
					eq(call.status, 404, "missing actor status");
					const ct = call.resHeaders["content-type"] ?? "";
					if (ct.includes("json")) {
						const body = await resJson(call);
						eq(`${body.group}.${body.code}`, "actor.not_found");
					}
				}
			},
		],
		[
			"getForId_unknown_not_found_without_retry",
			async (notes) => {
				const real = (await c.counter.getOrCreate([`s6r-${U}`]).whoami()).actorId;
				const fake = mutateId(real);
				assert.notEqual(fake, real);
				notes.fakeId = fake;
				const err = await rejects(c.counter.getForId(fake).getCount(), "getForId(unknown).getCount()");
				assertErrorCode(err, "actor", "not_found");
				const calls = exchangesFor(`${gw(encodeURIComponent(fake))}/action/getCount`, "POST");
				eq(calls.length, 1, "getForId must not be retried");
				eq(calls[0].status, 404);
			},
		],
		[
			"unknown_actor_name_fast_non_retryable",
			async (notes) => {
				for (const [label, call, path] of [
					["getOrCreate", () => c.nope.getOrCreate([`s6n-${U}`]).getCount(), `${gw("nope")}/action/getCount`],
					["get", () => c.nope.get([`s6n-${U}`]).getCount(), `${gw("nope")}/action/getCount`],
				]) {
					const before = exchangesFor(path).length;
					const err = await rejects(call(), `${label} on unknown actor name`);
					assert.ok(typeof err.group === "string" && typeof err.code === "string", `${label}: not an ActorError: ${err}`);
					assert.ok(!isRetryableCode(err.group, err.code), `${label}: ${err.group}.${err.code} is retried by the client`);
					eq(exchangesFor(path).length - before, 1, `${label}: exactly one request`);
					notes[label] = `${err.group}.${err.code}`;
				}
				const err = await rejects(c.nope.create([`s6n-${U}`]), "create on unknown actor name");
				assert.ok(typeof err.group === "string" && typeof err.code === "string", `create: not an ActorError: ${err}`);
				eq(exchangesFor(`${EP_URL.pathname.replace(/\/$/, "")}/actors`, "POST").length, 1);
				notes.create = `${err.group}.${err.code}`;
			},
		],
	];
}

// ---------------------------------------------------------------------------------------------
// 7. Token

function scenario7() {
	const c = client({ token: "t" });
	const actorsPath = `${EP_URL.pathname.replace(/\/$/, "")}/actors`;
	const state = {};
	return [
		[
			"token_bearer_on_api_calls",
			async () => {
				const h = await c.counter.create([`s7-${U}`]);
				const post = onlyExchange(actorsPath, "POST");
				eq(post.reqHeaders.authorization, "Bearer t");
				eq(post.status, 200);
				state.handle = h;
				state.id = await h.resolve();
				eq(await c.counter.get([`s7-${U}`]).resolve(), state.id);
				eq(onlyExchange(actorsPath, "GET").reqHeaders.authorization, "Bearer t");
			},
		],
		[
			"token_in_direct_path_and_header",
			async () => {
				assert.ok(state.id, "create failed");
				eq(await state.handle.increment(1), 1);
				const call = onlyExchange(`${gw(`${encodeURIComponent(state.id)}@t`)}/action/increment`, "POST");
				eq(call.reqHeaders["x-rivet-token"], "t");
				eq(await c.counter.getForId(state.id).getCount(), 1);
				eq(await state.handle.getGatewayUrl(), `${EP}/gateway/${encodeURIComponent(state.id)}@t`);
			},
		],
		[
			"token_in_query_params_and_header",
			async () => {
				eq(await c.counter.getOrCreate([`s7q-${U}`]).increment(2), 2);
				const call = onlyExchange(`${gw("counter")}/action/increment`, "POST");
				eq(new URL(call.url).searchParams.get("rvt-token"), "t");
				eq(call.reqHeaders["x-rivet-token"], "t");
			},
		],
		[
			"token_with_reserved_characters",
			async () => {
				const token = "s3cr/t@x y+%,?";
				const ct = client({ token });
				const h = await ct.counter.create([`s7s-${U}`]);
				const id = await h.resolve();
				eq(await h.increment(4), 4);
				onlyExchange(`${gw(`${encodeURIComponent(id)}@${encodeURIComponent(token)}`)}/action/increment`, "POST");
				eq(await ct.counter.getOrCreate([`s7s-${U}`]).getCount(), 4);
				const q = exchangesFor(`${gw("counter")}/action/getCount`, "POST")[0];
				eq(new URL(q.url).searchParams.get("rvt-token"), token);
			},
		],
	];
}

// ---------------------------------------------------------------------------------------------
// 8. getGatewayUrl()

function scenario8() {
	const c = client();
	return [
		[
			"gateway_url_getForId_plain_fetch",
			async () => {
				const h = await c.counter.create([`s8-${U}`], { input: { start: 4 } });
				const id = await h.resolve();
				const url = await c.counter.getForId(id).getGatewayUrl();
				eq(url, `${EP}/gateway/${encodeURIComponent(id)}`);
				const res = await plainJsonAction(url, "getCount");
				eq(res.status, 200, `POST ${res.url}: ${res.text}`);
				eq(JSON.parse(res.text), { output: 4 });
			},
		],
		[
			"gateway_url_get_plain_fetch",
			async () => {
				const key = [`s8g-${U}`, "b"];
				eq(await c.counter.getOrCreate(key).increment(6), 6);
				const url = await c.counter.get(key).getGatewayUrl();
				eq(url, `${EP}/gateway/counter?rvt-namespace=default&rvt-method=get&rvt-key=s8g-${U}%2Cb`);
				const res = await plainJsonAction(url, "getCount");
				eq(res.status, 200, `POST ${res.url}: ${res.text}`);
				eq(JSON.parse(res.text), { output: 6 });
			},
		],
		[
			"gateway_url_getOrCreate_input_plain_fetch",
			async () => {
				const key = [`s8c-${U}`];
				const url = await c.counter.getOrCreate(key, { createWithInput: { start: 5 } }).getGatewayUrl();
				// rvt-input for {start:5} as given in §4.3.
				eq(
					url,
					`${EP}/gateway/counter?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=${POOL}&rvt-key=s8c-${U}&rvt-input=uQABZXN0YXJ0BQ&rvt-crash-policy=sleep`,
				);
				const res = await plainJsonAction(url, "getCount");
				eq(res.status, 200, `POST ${res.url}: ${res.text}`);
				eq(JSON.parse(res.text), { output: 5 }, "actor created by plain fetch from rvt-input");
				eq(await c.counter.get(key).getInput(), { start: 5 });
			},
		],
	];
}

// ---------------------------------------------------------------------------------------------
// 9. Argument / return value round-trips over HTTP actions

function scenario9() {
	const c = client();
	const h = c.counter.getOrCreate([`s9-${U}`]);
	const echoAll = async (values) => {
		for (const v of values) {
			const out = await h.echo(v);
			eq(out, v, `echo(${JSON.stringify(v)?.slice(0, 80)})`);
		}
	};
	const checks = [
		["strings", () => echoAll(["hello", "", "üñí©ødé ✓ 😀", 'quote " backslash \\ nl \n tab \t', "x".repeat(20000)])],
		[
			"numbers",
			() => echoAll([0, 1, -7, 42, 255, 256, 65536, 2 ** 31, 2 ** 32 + 1, 2 ** 53 - 1, -(2 ** 53 - 1), 3.5, -0.25, 1e-7, 0.1, 1.7976931348623157e308]),
		],
		["bool_null", () => echoAll([true, false, null])],
		[
			"nested",
			() => {
				let deep = { leaf: [1, "x"] };
				for (let i = 0; i < 20; i++) deep = { level: i, child: deep, list: [i, "x"] };
				return echoAll([[], {}, [1, "a", [2, { b: null }]], { a: { b: { c: [1, 2, 3] } }, "x y": "z", ü: [true, false] }, deep]);
			},
		],
		[
			"multiple_args",
			async () => {
				eq(await h.triple(1, "two", { three: [3] }), [1, "two", { three: [3] }]);
				eq(await h.triple(null, [], {}), [null, [], {}]);
			},
		],
		[
			"return_nothing",
			async (notes) => {
				const a = await h.returnNothing();
				assert.ok(isNil(a), `returnNothing() gave ${JSON.stringify(a)}`);
				const b = await h.noop(123);
				assert.ok(isNil(b), `noop(123) gave ${JSON.stringify(b)}`);
				notes.returned = a === undefined ? "undefined" : a;
			},
		],
		[
			"action_names_needing_encoding",
			async () => {
				// §5: {name} is one percent-decoded path segment; dotted names come from the
				// client's nested proxy (h.math.add → "math.add").
				eq(await h.math.add(2, 3), 5);
				onlyExchange(`${gw("counter")}/action/math.add`, "POST");
				eq(await h.action({ name: "odd name/ü?#%", args: [] }), "odd");
				onlyExchange(`${gw("counter")}/action/${encodeURIComponent("odd name/ü?#%")}`, "POST");
			},
		],
		["dollar_prefixed_array", () => echoAll([["$foo", 1], { k: ["$$bar", [2]] }, ["$", "x"]])],
		[
			"bigint_keeps_type",
			async () => {
				const values = [123n, -5n, 0n, 2n ** 63n - 1n];
				if (ENCODING !== "cbor") values.push(2n ** 70n, -(2n ** 70n));
				for (const v of values) {
					const out = await h.echo(v);
					assert.equal(typeof out, "bigint", `echo(${v}n) returned ${describeType(out)} ${String(out)}`);
					assert.equal(out, v);
				}
			},
		],
		[
			"uint8array_keeps_type",
			async (notes) => {
				const random = new Uint8Array(1000).map((_, i) => (i * 37 + 11) & 0xff);
				for (const v of [new Uint8Array([0, 1, 2, 254, 255]), new Uint8Array(0), random]) {
					const out = await h.echo(v);
					assertBytes(out, v, `echo(Uint8Array(${v.length}))`);
					notes.type = out?.constructor?.name;
				}
			},
		],
		[
			"mixed_special_values",
			async () => {
				const out = await h.echo({ bin: new Uint8Array([9, 8]), n: 7n, list: [1n, new Uint8Array([1])], plain: 3 });
				assertBytes(out?.bin, new Uint8Array([9, 8]), "bin");
				assert.equal(out.n, 7n);
				assert.equal(out.list[0], 1n);
				assertBytes(out.list[1], new Uint8Array([1]), "list[1]");
				assert.equal(out.plain, 3);
			},
		],
	];
	return checks;
}

// ---------------------------------------------------------------------------------------------
// 10. Connection params over HTTP actions

function scenario10() {
	const c = client();
	return [
		[
			"params_reach_hooks_and_conn",
			async () => {
				// ASCII only: undici sends header values as latin-1 bytes, so non-ASCII params cannot
				// travel in x-rivet-conn-params faithfully (the official server rejects them too).
				const params = { token: "abc", n: 1, nested: { k: [1, 2.5, null, true] }, s: `s10-${U}` };
				const h = c.counter.getOrCreate([`s10-${U}`], { params });
				eq(await h.getParams(), params, "c.conn.params");
				eq(await h.getConnState(), { params, made_by: "create_conn_state" }, "c.conn.state from createConnState");
				const seen = await h.getBeforeConnectParams();
				assert.ok(Array.isArray(seen) && seen.length >= 3, `onBeforeConnect calls: ${JSON.stringify(seen)}`);
				eq(seen.at(-1), params, "params seen by onBeforeConnect");
				const call = onlyExchange(`${gw("counter")}/action/getParams`, "POST");
				eq(call.reqHeaders["x-rivet-conn-params"], JSON.stringify(params));
			},
		],
		[
			"no_params_is_nil",
			async () => {
				const h = c.counter.getOrCreate([`s10n-${U}`]);
				const p = await h.getParams();
				assert.ok(isNil(p), `params without params option: ${JSON.stringify(p)}`);
				const call = onlyExchange(`${gw("counter")}/action/getParams`, "POST");
				assert.equal(call.reqHeaders["x-rivet-conn-params"], undefined);
			},
		],
		[
			"scalar_params",
			async () => {
				eq(await c.counter.getOrCreate([`s10s-${U}`], { params: "plain text" }).getParams(), "plain text");
				eq(await c.counter.getOrCreate([`s10s-${U}`], { params: 17 }).getParams(), 17);
			},
		],
		[
			"rejected_by_on_before_connect",
			async () => {
				const h = c.counter.getOrCreate([`s10r-${U}`], { params: { reject: true } });
				const err = await rejects(h.getCount(), "action with rejected params");
				assertErrorCode(err, "user", "rejected");
				eq(err.message, "connection rejected");
				eq(err.metadata, { why: "test" });
			},
		],
		[
			"invalid_params_header_400",
			async (notes) => {
				// §7: the server parses x-rivet-conn-params as JSON; bad JSON → 400 (§2.4).
				const url = `${EP}/gateway/counter/action/getParams?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=${POOL}&rvt-key=s10b-${U}&rvt-crash-policy=sleep`;
				const res = await rawRequest(url, {
					headers: {
						"x-rivet-encoding": ENCODING,
						"content-type": ENCODING === "json" ? "application/json" : "application/octet-stream",
						"x-rivet-conn-params": "{not json",
					},
					body: Buffer.from(encodeRequest(ENCODING, [])),
				});
				const err = decodeErrorBody(ENCODING, res);
				notes.error = `${err.group}.${err.code}`;
				eq(res.status, 400, `bad params header: ${JSON.stringify(describeRaw(res))}`);
			},
		],
		[
			"new_conn_per_request",
			async () => {
				const h = c.counter.getOrCreate([`s10c-${U}`]);
				const a = await h.getConnId();
				const b = await h.getConnId();
				assert.ok(typeof a === "string" && a.length > 0, `conn id ${JSON.stringify(a)}`);
				assert.notEqual(a, b, "each HTTP action runs on its own connection (§7)");
			},
		],
	];
}

// ---------------------------------------------------------------------------------------------
// 11. Errors over HTTP actions

function scenario11() {
	const c = client();
	const key = [`s11-${U}`];
	const h = c.counter.getOrCreate(key);
	const state = {};
	const action = (name) => `${gw("counter")}/action/${name}`;
	return [
		[
			"user_error",
			async (notes) => {
				state.who = await h.whoami();
				const err = await rejects(h.fail(), "fail()");
				assert.ok(err instanceof ActorError, `expected ActorError, got ${err?.name}`);
				assertErrorCode(err, "user", "my_code");
				eq(err.message, "boom happened");
				eq(err.metadata, { a: 1 });
				assert.ok(err.actor, "error must name the actor (actor specifier)");
				eq(err.actor.actorId, state.who.actorId);
				assert.ok(Number.isInteger(err.actor.generation), `generation ${err.actor.generation}`);
				eq(err.actor.key, key[0]);
				const call = onlyExchange(action("fail"), "POST");
				eq(call.status, 500, "UserError status (§2.4)");
				notes.contentType = call.resHeaders["content-type"];
			},
		],
		[
			"internal_error_masked",
			async (notes) => {
				const err = await rejects(h.boom(), "boom()");
				assert.ok(err instanceof ActorError, `expected ActorError, got ${err?.name}`);
				assertErrorCode(err, "rivetkit", "internal_error");
				eq(err.message, "An internal error occurred");
				assert.ok(isNil(err.metadata), `no metadata expected, got ${JSON.stringify(err.metadata)}`);
				const call = onlyExchange(action("boom"), "POST");
				eq(call.status, 500);
				const { res } = await exchangeBodies(call);
				assert.ok(!Buffer.from(res ?? []).toString("latin1").includes("secret"), "exception text leaked");
				notes.contentType = call.resHeaders["content-type"];
			},
		],
		[
			"unknown_action",
			async (notes) => {
				const err = await rejects(h.action({ name: "nope", args: [] }), "unknown action");
				assert.ok(err instanceof ActorError, `expected ActorError, got ${err?.name}`);
				assertErrorCode(err, "actor", "action_not_found");
				const call = onlyExchange(action("nope"), "POST");
				eq(call.status, 404);
				notes.message = err.message;
				notes.contentType = call.resHeaders["content-type"];
			},
		],
	];
}

// ---------------------------------------------------------------------------------------------
// 12. Request body robustness (hand-made requests)

function encodeRequest(encoding, args, version = 4) {
	if (encoding === "json") return new TextEncoder().encode(JSON.stringify({ args }));
	if (encoding === "cbor") return cborEncode({ args });
	return concatBytes([version, 0], bareData(cborEncode(args)));
}

function decodeOutput(encoding, res) {
	if (encoding === "json") return JSON.parse(new TextDecoder().decode(res.body)).output;
	if (encoding === "cbor") return cborDecode(res.body).output;
	const body = res.body;
	assert.ok(body.length >= 2, "BARE response too short");
	const version = body[0] | (body[1] << 8);
	eq(version, 4, "BARE responses are v4 (§6.3)");
	const [data, end] = readBareData(body, 2);
	eq(end, body.length, "trailing bytes after HttpActionResponse");
	return cborDecode(data);
}

function splitInto(bytes, n) {
	const size = Math.ceil(bytes.length / n);
	const out = [];
	for (let i = 0; i < bytes.length; i += size) out.push(Buffer.from(bytes.subarray(i, i + size)));
	return out;
}

function scenario12() {
	const c = client();
	const key = `s12-${U}`;
	const query = `?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=${POOL}&rvt-key=${key}&rvt-crash-policy=sleep`;
	const queryUrl = (name) => `${EP}/gateway/counter/action/${name}${query}`;
	const state = {};
	const directUrl = async (name) => {
		state.id ??= (await c.counter.getOrCreate([key]).whoami()).actorId;
		return `${EP}/gateway/${encodeURIComponent(state.id)}/action/${name}`;
	};
	const headers = (encoding) => ({
		"x-rivet-encoding": encoding,
		"content-type": encoding === "json" ? "application/json" : "application/octet-stream",
	});
	const value = { a: [1, 2, "x"], s: "chunked ü" };
	const expectOk = (res, what) => assert.equal(res.status, 200, `${what}: ${JSON.stringify(describeRaw(res))}`);

	const checks = [
		[
			"chunked_body",
			async () => {
				const body = encodeRequest(ENCODING, [value]);
				const res = await rawRequest(queryUrl("echo"), { headers: headers(ENCODING), chunks: splitInto(body, 3), delayMs: 30 });
				expectOk(res, "chunked request");
				eq(decodeOutput(ENCODING, res), value);
			},
		],
		[
			"content_length_body",
			async () => {
				const body = Buffer.from(encodeRequest(ENCODING, [value]));
				const res = await rawRequest(await directUrl("echo"), { headers: headers(ENCODING), body });
				expectOk(res, "request with Content-Length");
				eq(decodeOutput(ENCODING, res), value);
			},
		],
		[
			"body_size_limit_on_chunked_body",
			async (notes) => {
				// §2.4: 64 KiB incoming limit → 400 message.incoming_too_long; the body is chunked,
				// so the server has to count what it reads.
				const small = encodeRequest(ENCODING, ["y".repeat(60_000)]);
				const okRes = await rawRequest(queryUrl("echo"), { headers: headers(ENCODING), chunks: splitInto(small, 8) });
				expectOk(okRes, `${small.length}-byte body`);
				eq(decodeOutput(ENCODING, okRes), "y".repeat(60_000));
				const big = encodeRequest(ENCODING, ["z".repeat(70_000)]);
				const res = await rawRequest(queryUrl("echo"), { headers: headers(ENCODING), chunks: splitInto(big, 8) });
				const err = decodeErrorBody(ENCODING, res);
				notes.error = `${res.status} ${err.group}.${err.code}`;
				eq(res.status, 400, `${big.length}-byte body: ${JSON.stringify(describeRaw(res))}`);
				eq(`${err.group}.${err.code}`, "message.incoming_too_long");
			},
		],
		[
			"undecodable_body_rejected_400",
			async (notes) => {
				const garbage = ENCODING === "json" ? Buffer.from("{not json") : ENCODING === "cbor" ? Buffer.from([0xff, 0x00]) : Buffer.from([4, 0, 0x05, 0x81]);
				const res = await rawRequest(await directUrl("echo"), { headers: headers(ENCODING), body: garbage });
				eq(res.status, 400, `garbage body: ${JSON.stringify(describeRaw(res))}`);
				const err = decodeErrorBody(ENCODING, res);
				assert.ok(typeof err.group === "string" && typeof err.code === "string", "error envelope");
				notes.error = `${err.group}.${err.code}`;
			},
		],
	];
	if (ENCODING === "json") {
		checks.push(
			[
				"missing_encoding_header_means_json",
				async () => {
					const res = await rawRequest(await directUrl("echo"), {
						headers: { "content-type": "application/json" },
						chunks: [Buffer.from('{"args":'), Buffer.from('[{"k":"v"}]}')],
					});
					expectOk(res, "no x-rivet-encoding");
					eq(decodeOutput("json", res), { k: "v" });
				},
			],
			[
				"unknown_encoding_header_means_json",
				async () => {
					const res = await rawRequest(await directUrl("echo"), {
						headers: { "x-rivet-encoding": "msgpack", "content-type": "application/json" },
						body: Buffer.from('{"args":[7]}'),
					});
					expectOk(res, "x-rivet-encoding: msgpack");
					eq(decodeOutput("json", res), 7);
				},
			],
			[
				"json_args_leniency",
				async () => {
					// §7: observed server leniency: scalar args → [args]; null or missing → [].
					const scalar = await rawRequest(await directUrl("echo"), { headers: headers("json"), body: Buffer.from('{"args":5}') });
					expectOk(scalar, '{"args":5}');
					eq(decodeOutput("json", scalar), 5);
					for (const body of ['{"args":null}', "{}"]) {
						const res = await rawRequest(await directUrl("getCount"), { headers: headers("json"), body: Buffer.from(body) });
						expectOk(res, body);
						eq(typeof decodeOutput("json", res), "number");
					}
				},
			],
		);
	}
	if (ENCODING === "bare") {
		checks.push(
			[
				"bare_request_versions_1_to_4",
				async () => {
					for (const version of [1, 2, 3, 4]) {
						const body = Buffer.from(encodeRequest("bare", [version * 11], version));
						const res = await rawRequest(await directUrl("echo"), { headers: headers("bare"), chunks: splitInto(body, 2) });
						expectOk(res, `BARE v${version} request`);
						eq(decodeOutput("bare", res), version * 11, `BARE v${version}`);
					}
				},
			],
			[
				"bare_version_5_rejected",
				async (notes) => {
					const body = Buffer.from(encodeRequest("bare", [1], 5));
					const res = await rawRequest(await directUrl("echo"), { headers: headers("bare"), body });
					eq(res.status, 400, `BARE v5: ${JSON.stringify(describeRaw(res))}`);
					const err = decodeErrorBody("bare", res);
					assert.ok(typeof err.group === "string" && typeof err.code === "string", "error envelope");
					notes.error = `${err.group}.${err.code}`;
				},
			],
		);
	}
	return checks;
}

// ---------------------------------------------------------------------------------------------

const SCENARIOS = {
	1: ["bootstrap: /metadata, path prefix, URL auth", scenario1],
	2: ["getOrCreate query form and keys", scenario2],
	3: ["getOrCreate with input", scenario3],
	4: ["create and getForId", scenario4],
	5: ["resolve via /actors", scenario5],
	6: ["not found", scenario6],
	7: ["token", scenario7],
	8: ["getGatewayUrl", scenario8],
	9: ["value round-trips", scenario9],
	10: ["connection params", scenario10],
	11: ["errors", scenario11],
	12: ["body parsing robustness", scenario12],
	...connScenarios({ EP, EP_URL, ENCODING, U, POOL, client }),
	...queueScenarios({ EP, EP_URL, ENCODING, U, client }),
};

async function main() {
	const unknown = SELECTED.filter((n) => !SCENARIOS[n]);
	if (unknown.length) {
		console.error(`unknown scenario(s): ${unknown.join(",")}`);
		process.exit(2);
	}
	const t0 = performance.now();
	const run = (n) =>
		runScenario({
			encoding: ENCODING,
			scenario: n,
			title: SCENARIOS[n][0],
			checks: SCENARIOS[n][1](),
			checkTimeoutMs: CHECK_TIMEOUT_MS,
		});
	let failed = 0;
	// Scenario 1 first and alone: it observes the client's one-time /metadata lookup.
	if (SELECTED.includes(1)) failed += (await run(1)).failed;
	const rest = await Promise.all(SELECTED.filter((n) => n !== 1).map(run));
	failed += rest.reduce((sum, r) => sum + r.failed, 0);
	await Promise.allSettled(clients.map((c) => c.dispose()));
	emit({ type: "done", encoding: ENCODING, failed, ms: Math.round(performance.now() - t0) });
	process.exit(failed ? 1 : 0);
}

main().catch((err) => {
	emit({ type: "fatal", encoding: ENCODING, error: describeError(err) });
	process.exit(1);
});
