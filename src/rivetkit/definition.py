"""Actor definitions: ``rivetkit.actor(...)`` and its decorators.

A definition is built at import time by decorators and frozen when it is passed to
``rivetkit.setup``. Every decorator validates eagerly: a wrong signature, a duplicate action name or
a conflicting option fails at import with a ``DefinitionError`` naming the function and the fix.
The runtime only ever reads the frozen definition.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from .config import ActorOptions

if typing.TYPE_CHECKING:
    from ._runtime.state import StateCodec

__all__ = ["ActorDefinition", "DefinitionError", "EventSpec", "QueueSpec", "actor", "event", "queue"]

F = TypeVar("F", bound=Callable[..., Any])

MAX_ACTOR_NAME_LENGTH = 64


class DefinitionError(TypeError):
    """A mistake in an actor definition, raised at import time."""


@dataclass(frozen=True, slots=True)
class EventSpec:
    """A declared event: ``events={"count": rivetkit.event(int)}``.

    Attributes:
        type: the payload type, for documentation and typing (not enforced at runtime).
        can_subscribe: optional ``(c) -> bool`` deciding whether a connection may subscribe.
    """

    type: Any = None
    can_subscribe: Callable[..., Any] | None = None


def event(type: Any = None, *, can_subscribe: Callable[..., Any] | None = None) -> EventSpec:
    """Declare an event an actor broadcasts.

    Args:
        type: payload type (documentation only).
        can_subscribe: optional ``(c) -> bool`` hook run before a connection subscribes.
    """
    if can_subscribe is not None and not callable(can_subscribe):
        raise DefinitionError("event(can_subscribe=...) must be a callable taking the context")
    return EventSpec(type=type, can_subscribe=can_subscribe)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A declared queue: ``queues={"jobs": rivetkit.queue(Job, complete=Result)}``.

    Attributes:
        type: the message body type (documentation and typing; not enforced at runtime).
        complete: the type of the completion response (documentation).
        can_publish: optional ``(c) -> bool`` deciding whether a client may send to the queue.
    """

    type: Any = None
    complete: Any = None
    can_publish: Callable[..., Any] | None = None


def queue(
    type: Any = None, *, complete: Any = None, can_publish: Callable[..., Any] | None = None
) -> QueueSpec:
    """Declare a durable queue an actor consumes (``c.queue.next(["jobs"])``).

    Args:
        type: message body type (documentation only).
        complete: type of the response given to ``message.complete(...)`` (documentation only).
        can_publish: optional ``(c) -> bool`` hook run before a client's send is stored;
            ``c.conn.params`` holds the sender's connection params. Sends from inside the actor
            (``c.queue.send``) are not checked.
    """
    if can_publish is not None and not callable(can_publish):
        raise DefinitionError("queue(can_publish=...) must be a callable taking the context")
    return QueueSpec(type=type, complete=complete, can_publish=can_publish)


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """A registered action: wire name, function, and its arity (context excluded)."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    min_args: int
    max_args: int | None  # None: takes *args


def _describe(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else name


def _check_callable(fn: Any, what: str, params: tuple[str, ...]) -> None:
    """Check that ``fn`` can be called with exactly ``params`` positional arguments."""
    if not callable(fn):
        raise DefinitionError(f"@{what} must decorate a function, got {fn!r}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without signature: accept
        return
    try:
        sig.bind(*params)
    except TypeError:
        wanted = ", ".join(params)
        raise DefinitionError(
            f"{_describe(fn)} is registered as @{what} but cannot be called as "
            f"{what}({wanted}); change its signature to `def {getattr(fn, '__name__', 'fn')}"
            f"({wanted})`"
        ) from None


def _arity(fn: Callable[..., Any]) -> tuple[int, int | None]:
    """Positional arguments an action accepts after the context: (min, max or None)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 0, None
    params = list(sig.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    has_var = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    required_kw = [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    if required_kw:
        raise DefinitionError(
            f"action {_describe(fn)} has required keyword-only parameters {required_kw}; "
            "actions receive positional arguments only: make them positional or give defaults"
        )
    if not positional and not has_var:
        raise DefinitionError(
            f"action {_describe(fn)} must take the context as its first parameter: "
            f"`def {fn.__name__}(c, ...)`"
        )
    rest = positional[1:] if positional else []
    required = sum(1 for p in rest if p.default is inspect.Parameter.empty)
    return required, None if has_var else len(rest)


def _return_type(fn: Callable[..., Any]) -> Any:
    """The resolved return annotation of ``fn``, or ``None``.

    Classes local to a function are resolved through the closure (``from __future__ import
    annotations`` leaves them as strings that ``get_type_hints`` cannot see).
    """
    try:
        return typing.get_type_hints(fn).get("return")
    except Exception:
        pass
    try:
        localns = dict(inspect.getclosurevars(fn).nonlocals)
        return typing.get_type_hints(fn, localns=localns).get("return")
    except Exception:
        return None


class ActorDefinition:
    """The definition of one kind of actor. Create it with :func:`actor`.

    Hooks and actions are registered with decorators; the definition is frozen when given to
    ``rivetkit.setup`` and may not change afterwards.
    """

    def __init__(
        self,
        name: str,
        *,
        state: Any = None,
        vars: Any = None,
        events: Mapping[str, EventSpec] | None = None,
        options: ActorOptions | None = None,
        conn_state: Any = None,
        queues: Mapping[str, QueueSpec] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise DefinitionError("actor name must be a non-empty string")
        if len(name) > MAX_ACTOR_NAME_LENGTH:
            raise DefinitionError(
                f"actor name {name!r} is {len(name)} characters; the limit is "
                f"{MAX_ACTOR_NAME_LENGTH}"
            )
        if options is not None and not isinstance(options, ActorOptions):
            raise DefinitionError("options must be rivetkit.ActorOptions(...)")
        if events is not None:
            if not isinstance(events, Mapping):
                raise DefinitionError('events must be a dict like {"count": rivetkit.event(int)}')
            for ev_name, spec in events.items():
                if not isinstance(ev_name, str) or not ev_name:
                    raise DefinitionError("event names must be non-empty strings")
                if not isinstance(spec, EventSpec):
                    raise DefinitionError(
                        f"event {ev_name!r} must be declared with rivetkit.event(...), "
                        f"got {spec!r}"
                    )
        if queues is not None:
            if not isinstance(queues, Mapping):
                raise DefinitionError('queues must be a dict like {"jobs": rivetkit.queue(dict)}')
            for queue_name, queue_spec in queues.items():
                if not isinstance(queue_name, str) or not queue_name:
                    raise DefinitionError("queue names must be non-empty strings")
                if not isinstance(queue_spec, QueueSpec):
                    raise DefinitionError(
                        f"queue {queue_name!r} must be declared with rivetkit.queue(...), "
                        f"got {queue_spec!r}"
                    )
        self.name = name
        self.state = state
        self.vars = vars
        self.conn_state = conn_state
        self.events: dict[str, EventSpec] | None = dict(events) if events is not None else None
        self.queues: dict[str, QueueSpec] | None = dict(queues) if queues is not None else None
        self.options = options or ActorOptions()
        self.actions: dict[str, ActionSpec] = {}
        self.hooks: dict[str, Callable[..., Any]] = {}
        self._frozen = False
        if state is not None:
            from ._runtime.state import StateCodec

            try:
                StateCodec.for_value(state)
            except (TypeError, ValueError) as exc:
                raise DefinitionError(
                    f"actor {name!r}: state {state!r} cannot be stored: {exc}"
                ) from None

    def __repr__(self) -> str:
        return f"<ActorDefinition {self.name!r} actions={sorted(self.actions)}>"

    @property
    def has_state(self) -> bool:
        return self.state is not None or "create_state" in self.hooks

    def _mutable(self, what: str) -> None:
        if self._frozen:
            raise DefinitionError(
                f"actor {self.name!r} is already part of a registry; register @{what} before "
                "calling rivetkit.setup(...)"
            )

    def freeze(self) -> None:
        """Make the definition read-only (called by ``rivetkit.setup``)."""
        if self._frozen:
            return
        self.state_codec = self._make_state_codec()
        self._frozen = True

    def _make_state_codec(self) -> StateCodec:
        from ._runtime.state import StateCodec

        if self.state is not None:
            return StateCodec.for_value(self.state)
        create_state = self.hooks.get("create_state")
        if create_state is None:
            return StateCodec("plain")
        return StateCodec.for_type(_return_type(create_state))

    # -- actions ---------------------------------------------------------------------------

    @overload
    def action(self, fn: F, /) -> F: ...

    @overload
    def action(self, fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...

    def action(self, fn: Any = None, /, *, name: str | None = None) -> Any:
        """Register an action. Usable as ``@a.action`` or ``@a.action(name="wireName")``.

        The function takes the :class:`~rivetkit.ActionContext` first, then the caller's
        arguments. It may be sync or async. Its wire name is ``name`` or the function name,
        used exactly as given.
        """

        def register(f: F) -> F:
            self._mutable("action")
            if not callable(f):
                raise DefinitionError(f"@action must decorate a function, got {f!r}")
            wire = name if name is not None else getattr(f, "__name__", None)
            if not isinstance(wire, str) or not wire:
                raise DefinitionError(f"action name for {_describe(f)} must be a non-empty string")
            if wire in self.actions:
                raise DefinitionError(
                    f"actor {self.name!r} already has an action named {wire!r} "
                    f"({_describe(self.actions[wire].fn)}); give {_describe(f)} another name "
                    f"with @action(name=...)"
                )
            lo, hi = _arity(f)
            self.actions[wire] = ActionSpec(
                wire, f, inspect.iscoroutinefunction(f), lo, hi
            )
            return f

        if fn is not None:
            if isinstance(fn, str):
                raise DefinitionError('use @a.action(name="wireName"), not @a.action("wireName")')
            return register(fn)
        return register

    # -- hooks -----------------------------------------------------------------------------

    def _hook(self, what: str, params: tuple[str, ...], fn: F) -> F:
        self._mutable(what)
        _check_callable(fn, what, params)
        if what in self.hooks:
            raise DefinitionError(
                f"actor {self.name!r} already has @{what} ({_describe(self.hooks[what])}); "
                f"remove one of them"
            )
        self.hooks[what] = fn
        return fn

    def create_state(self, fn: F) -> F:
        """``(c, input) -> state``: build the initial state once, when the actor is created."""
        if self.state is not None:
            raise DefinitionError(
                f"actor {self.name!r} has both state=... and @create_state ({_describe(fn)}); "
                "use one of them"
            )
        return self._hook("create_state", ("c", "input"), fn)

    def create_vars(self, fn: F) -> F:
        """``(c) -> vars``: build the ephemeral vars every time the actor starts."""
        if self.vars is not None:
            raise DefinitionError(
                f"actor {self.name!r} has both vars=... and @create_vars ({_describe(fn)}); "
                "use one of them"
            )
        return self._hook("create_vars", ("c",), fn)

    def on_create(self, fn: F) -> F:
        """``(c, input)``: runs once after the state is created."""
        return self._hook("on_create", ("c", "input"), fn)

    def on_wake(self, fn: F) -> F:
        """``(c)``: runs every time the actor starts (after creation, restart or sleep)."""
        return self._hook("on_wake", ("c",), fn)

    def on_migrate(self, fn: F) -> F:
        """``(c, is_new)``: prepare the actor's database (``c.db``) before any other hook runs.

        Runs on every start, first, inside one savepoint: either all of its changes are
        committed or none (it is bounded by ``on_migrate_timeout``, 30 s). ``is_new`` is true
        the first time, when the actor is being created.
        """
        return self._hook("on_migrate", ("c", "is_new"), fn)

    def on_sleep(self, fn: F) -> F:
        """``(c)``: runs when the actor goes to sleep, within ``sleep_grace_period``."""
        return self._hook("on_sleep", ("c",), fn)

    def on_destroy(self, fn: F) -> F:
        """``(c)``: runs once when the actor is destroyed, before its storage is removed."""
        return self._hook("on_destroy", ("c",), fn)

    def run(self, fn: F) -> F:
        """``async (c)``: a long-lived background task started after every wake.

        It should loop until ``c.aborted`` (or wait on ``c.abort_signal``): on sleep or destroy
        the abort signal fires and the task gets the rest of ``sleep_grace_period`` to return,
        after which it is cancelled. A run task that returns or raises leaves the actor awake
        (errors are logged); it starts again on the next wake. While it runs (and is not waiting
        on a queue) the actor does not sleep for idleness.
        """
        if not inspect.iscoroutinefunction(fn):
            raise DefinitionError(
                f"@run {_describe(fn)} must be an async function: "
                f"`async def {getattr(fn, '__name__', 'run')}(c)`"
            )
        return self._hook("run", ("c",), fn)

    def on_state_change(self, fn: F) -> F:
        """``(c, new_state)``: runs after a change of state is committed (sync)."""
        if inspect.iscoroutinefunction(fn):
            raise DefinitionError(
                f"@on_state_change {_describe(fn)} must be a plain (sync) function, as in RivetKit"
            )
        return self._hook("on_state_change", ("c", "new_state"), fn)

    def on_before_action_response(self, fn: F) -> F:
        """``(c, name, args, output) -> output``: may transform an action's output."""
        return self._hook("on_before_action_response", ("c", "name", "args", "output"), fn)

    def on_before_connect(self, fn: F) -> F:
        """``(c, params)``: accept or reject a connection (raise to reject)."""
        return self._hook("on_before_connect", ("c", "params"), fn)

    def create_conn_state(self, fn: F) -> F:
        """``(c, params) -> conn_state``: the per-connection state."""
        if self.conn_state is not None:
            raise DefinitionError(
                f"actor {self.name!r} has both conn_state=... and @create_conn_state "
                f"({_describe(fn)}); use one of them"
            )
        return self._hook("create_conn_state", ("c", "params"), fn)


    def on_connect(self, fn: F) -> F:
        """``(c, conn)``: runs after a connection is established and visible in ``c.conns``."""
        return self._hook("on_connect", ("c", "conn"), fn)

    def on_disconnect(self, fn: F) -> F:
        """``(c, conn)``: runs after a connection closed (for any reason)."""
        return self._hook("on_disconnect", ("c", "conn"), fn)

    def on_request(self, fn: F) -> F:
        """``async (c, request) -> response``: raw HTTP at ``/request/*``.

        ``request`` is a ``starlette.requests.Request`` whose URL is the path after
        ``/request`` (``rvt-*`` parameters removed); return any ``starlette.responses.Response``,
        including a ``StreamingResponse`` (server-sent events work). ``c.conn`` is a transient
        connection carrying the caller's params.
        """
        return self._hook("on_request", ("c", "request"), fn)

    def on_websocket(self, fn: F) -> F:
        """``async (c, websocket)``: raw WebSocket at ``/websocket/*``.

        ``websocket`` is an accepted ``starlette.websockets.WebSocket``; ``websocket.url.path``
        keeps the ``/websocket/...`` prefix. The socket closes when the handler returns.
        """
        if not inspect.iscoroutinefunction(fn):
            raise DefinitionError(
                f"@on_websocket {_describe(fn)} must be an async function: "
                f"`async def {getattr(fn, '__name__', 'handler')}(c, websocket)`"
            )
        return self._hook("on_websocket", ("c", "websocket"), fn)

def actor(
    name: str,
    *,
    state: Any = None,
    vars: Any = None,
    events: Mapping[str, EventSpec] | None = None,
    options: ActorOptions | None = None,
    conn_state: Any = None,
    queues: Mapping[str, QueueSpec] | None = None,
) -> ActorDefinition:
    """Define a kind of actor.

    Args:
        name: the actor name clients address (``client.get_or_create("counter", ...)``).
        state: initial state, copied for every new actor: a dict, a dataclass instance or a
            msgspec/pydantic model. Mutually exclusive with ``@create_state``.
        vars: initial ephemeral vars (not persisted). Mutually exclusive with ``@create_vars``.
        events: declared events, ``{"count": rivetkit.event(int)}``. When given, broadcasting an
            undeclared event is an error.
        options: :class:`~rivetkit.ActorOptions`; RivetKit's defaults otherwise.
        conn_state: initial per-connection state; mutually exclusive with ``@create_conn_state``.
        queues: declared durable queues, ``{"jobs": rivetkit.queue(dict)}``. When given, a send
            to an undeclared queue is refused with ``queue.not_declared``; without it, any
            name is accepted (as RivetKit).

    Example::

        counter = rivetkit.actor("counter", state={"count": 0})

        @counter.action
        def increment(c, amount: int) -> int:
            c.state["count"] += amount
            return c.state["count"]
    """
    return ActorDefinition(
        name,
        state=state,
        vars=vars,
        events=events,
        options=options,
        conn_state=conn_state,
        queues=queues,
    )
