// A page using @rivetkit/react against the Python server (client-protocol §15 scenario 30).
//
// Query parameters: endpoint (the server, another origin than this page), key (actor key),
// encoding (json | cbor | bare). It renders the connection status, the events it receives and
// the results of two buttons: an action over the connection (WebSocket) and a raw request through
// the handle (a cross-origin GET with a custom header, so the browser preflights it).
//
// Not an HTTP action: rivetkit 2.3.19 sends action bodies as a ReadableStream with
// `duplex: "half"`, which Chromium only allows over HTTP/2, so `handle.increment()` fails with
// "Failed to fetch" (net::ERR_ALPN_NEGOTIATION_FAILED) against any http:// server.

import { createRivetKit } from "@rivetkit/react";
import { useCallback, useState } from "react";
import { createRoot } from "react-dom/client";

const query = new URLSearchParams(location.search);
const endpoint = query.get("endpoint");
const key = query.get("key") ?? "browser";
const encoding = query.get("encoding") ?? undefined;

const { useActor } = createRivetKit({ endpoint, encoding });

function describe(err) {
	if (!err) return "";
	return err.group ? `${err.group}.${err.code}: ${err.message}` : String(err.message ?? err);
}

function App() {
	const chat = useActor({ name: "chat", key: [key], params: { from: "browser" } });
	const [events, setEvents] = useState([]);
	const [results, setResults] = useState({ conn: "", http: "", who: "" });
	const [failure, setFailure] = useState("");

	chat.useEvent("newCount", (count) => setEvents((prev) => [...prev, count]));

	const run = useCallback(
		async (slot, fn) => {
			try {
				const value = await fn();
				setResults((prev) => ({ ...prev, [slot]: JSON.stringify(value) }));
			} catch (err) {
				setFailure(`${slot}: ${describe(err)}`);
			}
		},
		[],
	);

	return (
		<main>
			<h1>rivetkit browser compat</h1>
			<p>
				status: <span id="status">{chat.connStatus}</span>
			</p>
			<p>
				actor: <span id="actor-id">{chat.connection?.actorId ?? ""}</span>
			</p>
			<p>
				<button id="inc-conn" type="button" onClick={() => run("conn", () => chat.connection.increment(1))}>
					+1 over the connection
				</button>
				<span id="result-conn">{results.conn}</span>
			</p>
			<p>
				<button
					id="fetch"
					type="button"
					onClick={() =>
						run("http", async () => {
							const res = await chat.handle.fetch("/count", { headers: { "x-test": "from-page" } });
							return { status: res.status, body: await res.json() };
						})
					}
				>
					raw fetch
				</button>
				<span id="result-http">{results.http}</span>
			</p>
			<p>
				<button id="whoami" type="button" onClick={() => run("who", () => chat.connection.whoami())}>
					whoami
				</button>
				<span id="result-who">{results.who}</span>
			</p>
			<ol id="events">
				{events.map((count, i) => (
					<li key={i}>{count}</li>
				))}
			</ol>
			<p id="error">{failure || describe(chat.error)}</p>
		</main>
	);
}

createRoot(document.getElementById("root")).render(<App />);
