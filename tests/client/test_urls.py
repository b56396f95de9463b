"""Pure checks of the client's sans-I/O layer against the spec's examples (§1.1, §2.3, §3, §4, §13)."""

from __future__ import annotations

import base64
from typing import Any

import cbor2
import pytest

from rivetkit import BigInt
from rivetkit._protocol import BARE, CBOR, JSON, ActorSpecifier, HttpResponseError
from rivetkit.client import ActorError, Client, Encoding, sync
from rivetkit.client._protocol import (
    DEFAULT_ENDPOINT,
    ActorQuery,
    ClientConfig,
    api_url,
    apply_metadata,
    create_body,
    direct_gateway_url,
    encode_uri_component,
    error_from_response,
    form_encode,
    get_or_create_body,
    is_lifecycle_retryable,
    is_request_retryable,
    is_scheduling_error,
    join_url,
    lifecycle_max_attempts,
    normalize_key,
    parse_endpoint,
    query_gateway_url,
    query_params,
    resolve_config,
    retry_backoff,
)

EP = "http://127.0.0.1:6420"


def config(**changes: Any) -> ClientConfig:
    base: dict[str, Any] = {
        "endpoint": EP,
        "namespace": "default",
        "token": None,
        "pool_name": "default",
        "encoding": "bare",
    }
    base.update(changes)
    return ClientConfig(**base)


def b64url_cbor(raw: str) -> Any:
    return cbor2.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))


# -- §4.3 getGatewayUrl ---------------------------------------------------------------------------


def test_gateway_url_get() -> None:
    url = query_gateway_url(config(), ActorQuery.get("counter", ["a", "b"]))
    assert url == f"{EP}/gateway/counter?rvt-namespace=default&rvt-method=get&rvt-key=a%2Cb"


def test_gateway_url_get_or_create_with_input() -> None:
    query = ActorQuery.get_or_create("counter", ["a"], input={"start": 5})
    url = query_gateway_url(config(), query)
    prefix = (
        f"{EP}/gateway/counter?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default"
        "&rvt-key=a&rvt-input="
    )
    assert url.startswith(prefix) and url.endswith("&rvt-crash-policy=sleep")
    raw = url[len(prefix) : -len("&rvt-crash-policy=sleep")]
    # same value as the spec's example (cbor-x writes a non-minimal map header, cbor2 does not)
    assert b64url_cbor(raw) == b64url_cbor("uQABZXN0YXJ0BQ") == {"start": 5}
    assert "=" not in raw


def test_gateway_url_direct() -> None:
    assert direct_gateway_url(config(), "abc123") == f"{EP}/gateway/abc123"
    assert direct_gateway_url(config(token="t k/@"), "abc") == f"{EP}/gateway/abc@t%20k%2F%40"
    assert (
        direct_gateway_url(config(endpoint=EP + "/api/rivet"), "abc", "/action/getCount")
        == f"{EP}/api/rivet/gateway/abc/action/getCount"
    )


# -- §13 transcripts ------------------------------------------------------------------------------


def test_transcript_13_1_action_url() -> None:
    query = ActorQuery.get_or_create("counter", ["k1"])
    assert query_gateway_url(config(), query, "/action/increment") == (
        f"{EP}/gateway/counter/action/increment?rvt-namespace=default&rvt-method=getOrCreate"
        "&rvt-runner=default&rvt-key=k1&rvt-crash-policy=sleep"
    )


def test_transcript_13_4_api_calls() -> None:
    assert api_url(config(), "/actors") == f"{EP}/actors?namespace=default"
    assert api_url(config(), "/actors", [("name", "counter"), ("key", "c-mwqc7tev/second")]) == (
        f"{EP}/actors?name=counter&key=c-mwqc7tev%2Fsecond&namespace=default"
    )
    body = create_body(config(), "counter", ["c-mwqc7tev", "second"], input={"start": 10})
    assert list(body) == ["name", "runner_name_selector", "key", "input", "crash_policy"]
    assert body["key"] == "c-mwqc7tev/second"
    assert body["crash_policy"] == "sleep" and body["runner_name_selector"] == "default"
    official = cbor2.loads(base64.b64decode("uQABZXN0YXJ0Cg=="))
    assert cbor2.loads(base64.b64decode(body["input"])) == official == {"start": 10}
    assert base64.b64encode(base64.b64decode(body["input"])).decode() == body["input"]  # padded


def test_get_or_create_body() -> None:
    query = ActorQuery.get_or_create("counter", ["in2-x"], input={"start": 7}, region="eu")
    body = get_or_create_body(config(pool_name="pool"), query)
    assert list(body) == [
        "datacenter",
        "name",
        "key",
        "runner_name_selector",
        "input",
        "crash_policy",
    ]
    assert body["datacenter"] == "eu" and body["runner_name_selector"] == "pool"
    assert cbor2.loads(base64.b64decode(body["input"])) == {"start": 7}
    assert "input" not in get_or_create_body(config(), ActorQuery.get_or_create("c", []))
    assert create_body(config(), "c", [], region="us")["datacenter"] == "us"
    assert create_body(config(), "c", [])["key"] == "/"


# -- §4.2 rvt-* parameters ------------------------------------------------------------------------


def test_query_params_order() -> None:
    query = ActorQuery.get_or_create("c", ["x"], input=1, region="r")
    params = query_params(query, namespace="ns", pool_name="p", token="t")
    assert [name for name, _ in params] == [
        "rvt-namespace",
        "rvt-method",
        "rvt-runner",
        "rvt-key",
        "rvt-input",
        "rvt-region",
        "rvt-crash-policy",
        "rvt-token",
    ]
    get = query_params(ActorQuery.get("c", []), namespace="ns", pool_name="p", token="t")
    assert get == [("rvt-namespace", "ns"), ("rvt-method", "get"), ("rvt-token", "t")]


def test_query_key_is_comma_joined_without_escaping() -> None:
    # Official behaviour (spec §4.2): lossy for parts containing ",".
    params = dict(
        query_params(ActorQuery.get("c", ["x,y", "z"]), namespace="n", pool_name="p", token=None)
    )
    assert params["rvt-key"] == "x,y,z"
    assert "rvt-key" not in dict(
        query_params(ActorQuery.get("c", []), namespace="n", pool_name="p", token=None)
    )


def test_input_size_limit() -> None:
    ActorQuery.get_or_create("c", [], input="x" * 4000)
    with pytest.raises(ValueError, match="4096"):
        ActorQuery.get_or_create("c", [], input="x" * 4096)
    params = dict(
        query_params(
            ActorQuery.get_or_create("c", [], input={"n": BigInt(1), "b": b"\x01"}),
            namespace="n",
            pool_name="p",
            token=None,
        )
    )
    assert b64url_cbor(params["rvt-input"]) == {"n": ["$BigInt", "1"], "b": ["$Uint8Array", "AQ=="]}


@pytest.mark.parametrize(
    ("pairs", "encoded"),
    [
        ([("a", "b c")], "a=b+c"),
        ([("k", "a,b")], "k=a%2Cb"),
        ([("k", "*-._~!'()")], "k=*-._%7E%21%27%28%29"),
        ([("k", "ü€")], "k=%C3%BC%E2%82%AC"),
        ([("k", "a+b&c=d/e?f#g%")], "k=a%2Bb%26c%3Dd%2Fe%3Ff%23g%25"),
        ([("a", ""), ("b", "1")], "a=&b=1"),
    ],
)
def test_form_encode_matches_urlsearchparams(pairs: list[tuple[str, str]], encoded: str) -> None:
    assert form_encode(pairs) == encoded


def test_encode_uri_component() -> None:
    assert encode_uri_component("a b/c?#@") == "a%20b%2Fc%3F%23%40"
    assert encode_uri_component("!~*'()-_.") == "!~*'()-_."
    assert encode_uri_component("ü") == "%C3%BC"


def test_join_url_collapses_slashes() -> None:
    assert join_url("http://h:1", "/metadata") == "http://h:1/metadata"
    assert join_url("http://h:1/api/rivet", "/metadata") == "http://h:1/api/rivet/metadata"
    assert join_url("http://h:1/api//rivet", "//gateway/x") == "http://h:1/api/rivet/gateway/x"
    assert join_url("http://h:1", "/a", [("b", "c d")]) == "http://h:1/a?b=c+d"


# -- §1.1 endpoint and configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "parsed"),
    [
        ("http://localhost:6420", ("http://localhost:6420", None, None)),
        ("http://localhost:6420/", ("http://localhost:6420", None, None)),
        ("https://h/api/rivet/", ("https://h/api/rivet", None, None)),
        ("http://ns:tok@h:1", ("http://h:1", "ns", "tok")),
        ("http://ns@h:1/p", ("http://h:1/p", "ns", None)),
        ("http://n%40s:t%3Ak@h", ("http://h", "n@s", "t:k")),
        ("http://[::1]:6420", ("http://[::1]:6420", None, None)),
    ],
)
def test_parse_endpoint(endpoint: str, parsed: tuple[str, str | None, str | None]) -> None:
    assert parse_endpoint(endpoint) == parsed


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://h/?a=1",
        "http://h/?",
        "http://h/#frag",
        "ftp://h",
        "localhost:6420",
        "http://:tok@h",
        "http://h:99999",
    ],
)
def test_parse_endpoint_rejects(endpoint: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(endpoint)


def _resolve(
    endpoint: str | None = None, env: dict[str, str] | None = None, **kw: Any
) -> ClientConfig:
    options: dict[str, Any] = {
        "namespace": None,
        "token": None,
        "pool_name": None,
        "encoding": None,
        "headers": None,
    }
    options.update(kw)
    return resolve_config(endpoint, env=env or {}, **options)


def test_config_defaults() -> None:
    cfg = _resolve()
    assert cfg == ClientConfig(DEFAULT_ENDPOINT, "default", None, "default", "bare", ())


def test_config_environment() -> None:
    env = {
        "RIVET_ENDPOINT": "http://endpoint:1",
        "RIVET_NAMESPACE": "env-ns",
        "RIVET_TOKEN": "env-tok",
        "RIVET_POOL": "env-pool",
    }
    cfg = _resolve(env=env)
    assert (cfg.endpoint, cfg.namespace, cfg.token, cfg.pool_name) == (
        "http://endpoint:1",
        "env-ns",
        "env-tok",
        "env-pool",
    )
    # RIVET_ENGINE wins over RIVET_ENDPOINT (as the official client); arguments win over both
    assert _resolve(env={**env, "RIVET_ENGINE": "http://engine:2"}).endpoint == "http://engine:2"
    explicit = _resolve("http://arg:3", env=env, namespace="a", token="b", pool_name="c")
    assert (explicit.endpoint, explicit.namespace, explicit.token, explicit.pool_name) == (
        "http://arg:3",
        "a",
        "b",
        "c",
    )
    # URL auth beats the environment
    authed = _resolve("http://u:p@arg:3", env=env)
    assert (authed.namespace, authed.token) == ("u", "p")


def test_config_conflicts() -> None:
    with pytest.raises(ValueError, match="namespace"):
        _resolve("http://ns@h", namespace="other")
    with pytest.raises(ValueError, match="token"):
        _resolve("http://ns:t@h", token="other")
    with pytest.raises(ValueError, match="encoding"):
        _resolve(encoding="xml")
    with pytest.raises(TypeError, match="headers"):
        _resolve(headers={"a": 1})


def test_client_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVET_ENDPOINT", "http://env-host:9/base")
    monkeypatch.setenv("RIVET_NAMESPACE", "env-ns")
    monkeypatch.delenv("RIVET_ENGINE", raising=False)
    handle = Client().get("counter", "k")
    assert handle.gateway_url() == (
        "http://env-host:9/base/gateway/counter?rvt-namespace=env-ns&rvt-method=get&rvt-key=k"
    )
    assert "env-host:9" in repr(sync.Client())


def test_apply_metadata() -> None:
    cfg = config(token="old")
    assert apply_metadata(cfg, {}) == cfg
    assert apply_metadata(cfg, {"runtime": "rivetkit", "actorNames": {}}) == cfg
    moved = apply_metadata(
        cfg, {"clientEndpoint": "http://other:1/", "clientNamespace": "ns2", "clientToken": "t2"}
    )
    assert (moved.endpoint, moved.namespace, moved.token) == ("http://other:1", "ns2", "t2")
    kept = apply_metadata(cfg, {"clientEndpoint": "http://other:1"})
    assert (kept.namespace, kept.token) == ("default", "old")
    # clientNamespace/clientToken only count together with clientEndpoint
    assert apply_metadata(cfg, {"clientNamespace": "x", "clientToken": "y"}) == cfg
    with pytest.raises(ValueError):
        apply_metadata(cfg, [])
    with pytest.raises(ValueError):
        apply_metadata(cfg, {"clientEndpoint": "not a url"})


def test_normalize_key() -> None:
    assert normalize_key("a") == ("a",)
    assert normalize_key(["a", "b"]) == ("a", "b")
    assert normalize_key(()) == ()
    assert normalize_key(["x" * 128]) == ("x" * 128,)
    with pytest.raises(ValueError, match="128"):
        normalize_key(["x" * 129])
    with pytest.raises(TypeError):
        normalize_key([1])  # type: ignore[list-item]


# -- §2.3 errors and retry rules ------------------------------------------------------------------


def test_error_from_json_response() -> None:
    body = (
        b'{"actor":{"actorId":"xg2m","generation":1,"key":"k1"},"code":"my_code","group":"user",'
        b'"message":"boom happened","metadata":{"a":1}}'
    )
    encodings: tuple[Encoding, ...] = ("json", "cbor", "bare")
    for encoding in encodings:
        err = error_from_response(500, "application/json", body, encoding)
        assert isinstance(err, ActorError)
        assert (err.group, err.code, err.message, err.metadata) == (
            "user",
            "my_code",
            "boom happened",
            {"a": 1},
        )
        assert err.actor == {"actorId": "xg2m", "generation": 1, "key": "k1"}
        assert err.status == 500


@pytest.mark.parametrize(("encoding", "codec"), [("cbor", CBOR), ("bare", BARE), ("json", JSON)])
def test_error_from_encoded_response(encoding: Any, codec: Any) -> None:
    envelope = HttpResponseError("user", "c", "m", {"x": [1, None]}, ActorSpecifier("id", 2, None))
    body = codec.encode_http_error(envelope)
    err = error_from_response(400, "application/octet-stream", body, encoding)
    assert (err.group, err.code, err.message, err.metadata) == ("user", "c", "m", {"x": [1, None]})
    assert err.actor == {"actorId": "id", "generation": 2}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", b"Bad Gateway"), ("application/json", b'{"detail":"x"}'), (None, b"")],
)
def test_error_fallback(content_type: str | None, body: bytes) -> None:
    err = error_from_response(502, content_type, body, "bare")
    assert err.full_code == "client.http_error"
    assert err.message == f"HTTP 502: {body.decode()}"
    assert err.status == 502
    long = error_from_response(500, "text/plain", b"y" * 500, "json")
    assert long.message == "HTTP 500: " + "y" * 200


def test_lifecycle_retry_rules() -> None:
    for code in (
        "not_found",
        "starting",
        "stopping",
        "not_configured",
        "dropped_reply",
        "destroying",
        "destroyed_x",
    ):
        assert is_lifecycle_retryable("actor", code)
    for group, code in [
        ("actor", "action_not_found"),
        ("guard", "not_found"),
        ("user", "starting"),
    ]:
        assert not is_lifecycle_retryable(group, code)
    assert is_scheduling_error("guard", "actor_ready_timeout")
    assert is_scheduling_error("guard", "actor_runner_failed")
    assert lifecycle_max_attempts(ActorQuery.get("c", [])) == 24
    assert lifecycle_max_attempts(ActorQuery.get_or_create("c", [])) == 60
    assert lifecycle_max_attempts(ActorQuery.get_for_id("c", "id")) == 1


def test_request_retry_rules() -> None:
    assert is_request_retryable("actor", "restarting")
    for code in (
        "service_unavailable",
        "actor_wake_retries_exceeded",
        "actor_stopped_while_waiting",
        "tunnel_request_aborted",
        "tunnel_message_timeout",
        "tunnel_response_closed",
        "gateway_response_start_timeout",
    ):
        assert is_request_retryable("guard", code)
    for group, code in [
        ("actor", "not_found"),
        ("guard", "actor_ready_timeout"),
        ("user", "restarting"),
    ]:
        assert not is_request_retryable(group, code)
    delays = [retry_backoff(n, 0.025, 0.2) for n in range(5)]
    assert delays == [0.025, 0.05, 0.1, 0.2, 0.2]
    assert retry_backoff(1000, 0.5, 15.0) == 15.0
