"""The ``rivetkit`` command line: ``rivetkit serve TARGET``.

TARGET is ``path/to/file.py[:attr]`` or ``package.module[:attr]``; ``attr`` defaults to
``registry``. This is the only place that configures logging; uvicorn handles signals.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from .config import EngineConfig, ServerlessConfig
from .registry import Registry

__all__ = ["main", "load_target"]


def load_target(target: str) -> Registry:
    """Import ``TARGET`` and return its registry.

    Raises:
        click.BadParameter: the target cannot be imported or is not a registry.
    """
    spec, _, attr = target.partition(":")
    attr = attr or "registry"
    module: Any
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = Path(spec).resolve()
        if not path.is_file():
            raise click.BadParameter(f"no such file: {spec}", param_hint="TARGET")
        name = f"_rivetkit_target_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise click.BadParameter(f"cannot import {spec}", param_hint="TARGET")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        module_spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            raise click.BadParameter(f"cannot import module {spec!r}: {exc}", param_hint="TARGET")
    registry = getattr(module, attr, None)
    if registry is None:
        raise click.BadParameter(
            f"{spec} has no attribute {attr!r}; point at the registry with {spec}:NAME",
            param_hint="TARGET",
        )
    if not isinstance(registry, Registry):
        raise click.BadParameter(
            f"{spec}:{attr} is a {type(registry).__name__}, not a rivetkit registry "
            "(build one with rivetkit.setup(...))",
            param_hint="TARGET",
        )
    return registry


@click.group()
@click.version_option(package_name="rivetkit")
def main() -> None:
    """Rivet Actors for Python."""


@main.command()
@click.argument("target")
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 6420).")
@click.option(
    "--storage",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for actor databases (default .rivetkit, or RIVETKIT_STORAGE_PATH).",
)
@click.option(
    "--engine",
    default=None,
    metavar="URL",
    help="Host the actors on the Rivet Engine at URL instead of serving HTTP (engine mode).",
)
@click.option("--namespace", default=None, help="Engine namespace (default: default).")
@click.option("--token", default=None, help="Engine admin token, when the engine requires one.")
@click.option("--pool", default=None, help="Engine pool this process serves (default: default).")
@click.option(
    "--version", "envoy_version", type=int, default=None,
    help="Deployment version; the engine prefers the highest (default 1).",
)
@click.option(
    "--serverless",
    is_flag=True,
    default=False,
    help="Serverless engine mode: serve the HTTP endpoints the engine calls to start actors "
    "(GET /api/rivet/metadata, POST /api/rivet/start) on --host/--port; needs --engine.",
)
@click.option(
    "--public-url",
    default=None,
    metavar="URL",
    help="With --serverless: the URL the engine reaches this server at "
    "(default http://HOST:PORT).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
def serve(
    target: str,
    host: str | None,
    port: int | None,
    storage: Path | None,
    engine: str | None,
    namespace: str | None,
    token: str | None,
    pool: str | None,
    envoy_version: int | None,
    serverless: bool,
    public_url: str | None,
    log_level: str,
) -> None:
    """Serve the registry in TARGET (path/to/file.py[:attr] or module[:attr])."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    registry = load_target(target)
    if storage is not None:
        registry.set_storage_path(storage)
    if engine is not None:
        options: dict[str, Any] = {"endpoint": engine}
        for name, value in (("namespace", namespace), ("token", token), ("pool", pool),
                            ("version", envoy_version)):
            if value is not None:
                options[name] = value
        try:
            if serverless:
                options["serverless"] = ServerlessConfig(public_url=public_url)
            engine_config = EngineConfig(**options)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--engine") from None
        if public_url is not None and not serverless:
            raise click.UsageError("--public-url needs --serverless")
        click.echo(
            f"rivetkit hosting {', '.join(sorted(registry.definitions))} on the engine at "
            f"{engine_config.endpoint} (namespace {engine_config.namespace}, "
            f"pool {engine_config.pool})",
            err=True,
        )
        if serverless:
            click.echo(
                f"rivetkit serverless on http://{host or registry.config.host}:"
                f"{registry.config.port if port is None else port} "
                f"(the engine calls {public_url or 'this address'})",
                err=True,
            )
        registry.run(engine=engine_config, host=host, port=port)
        return
    if any(v is not None for v in (namespace, token, pool, envoy_version)) or serverless \
            or public_url is not None:
        raise click.UsageError(
            "--namespace, --token, --pool, --version, --serverless and --public-url need --engine"
        )
    cfg = registry.config
    click.echo(
        f"rivetkit serving {', '.join(sorted(registry.definitions))} on "
        f"http://{host or cfg.host}:{cfg.port if port is None else port} "
        f"(storage {registry.config.storage_path})",
        err=True,
    )
    registry.run(host=host, port=port, log_level=log_level)
