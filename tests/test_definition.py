"""Definition mistakes fail at import time with a message naming the function and the fix."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import rivetkit
from rivetkit import DefinitionError


def test_state_and_create_state_conflict() -> None:
    a = rivetkit.actor("a", state={"n": 0})

    def make_state(c, input):  # noqa: ANN001, ANN202
        return {}

    with pytest.raises(DefinitionError, match=r"both state=\.\.\. and @create_state.*make_state"):
        a.create_state(make_state)


def test_vars_and_create_vars_conflict() -> None:
    a = rivetkit.actor("a", vars={"x": 1})
    with pytest.raises(DefinitionError, match="both vars=... and @create_vars"):
        a.create_vars(lambda c: {})


def test_hook_with_wrong_signature_names_function_and_fix() -> None:
    a = rivetkit.actor("a")

    def build(c):  # noqa: ANN001, ANN202 - missing the input parameter
        return {}

    with pytest.raises(DefinitionError) as info:
        a.create_state(build)
    message = str(info.value)
    assert "test_definition" in message and "build" in message
    assert "def build(c, input)" in message


def test_action_without_context_parameter() -> None:
    a = rivetkit.actor("a")

    def no_params():  # noqa: ANN202
        return 1

    with pytest.raises(DefinitionError, match=r"must take the context.*def no_params\(c, \.\.\.\)"):
        a.action(no_params)


def test_action_with_required_keyword_only_parameter() -> None:
    a = rivetkit.actor("a")

    def kw(c, *, amount):  # noqa: ANN001, ANN202
        return amount

    with pytest.raises(DefinitionError, match="keyword-only"):
        a.action(kw)


def test_duplicate_action_names() -> None:
    a = rivetkit.actor("a")

    @a.action
    def ping(c):  # noqa: ANN001, ANN202
        return 1

    def other(c):  # noqa: ANN001, ANN202
        return 2

    with pytest.raises(DefinitionError, match=r"already has an action named 'ping'.*@action\(name=\.\.\.\)"):
        a.action(name="ping")(other)


def test_action_decorator_given_a_string() -> None:
    a = rivetkit.actor("a")
    with pytest.raises(DefinitionError, match='@a.action\\(name="wireName"\\)'):
        a.action("wireName")  # type: ignore[call-overload]


def test_explicit_wire_name_is_used_exactly() -> None:
    a = rivetkit.actor("a")

    @a.action(name="getCount")
    def get_count(c):  # noqa: ANN001, ANN202
        return 0

    assert list(a.actions) == ["getCount"]
    assert a.actions["getCount"].fn is get_count


def test_hook_registered_twice() -> None:
    a = rivetkit.actor("a")
    a.on_wake(lambda c: None)
    with pytest.raises(DefinitionError, match="already has @on_wake"):
        a.on_wake(lambda c: None)


def test_async_on_state_change_rejected() -> None:
    a = rivetkit.actor("a", state={})

    async def changed(c, new_state):  # noqa: ANN001, ANN202
        pass

    with pytest.raises(DefinitionError, match="must be a plain \\(sync\\) function"):
        a.on_state_change(changed)


@pytest.mark.parametrize(
    ("name", "pattern"),
    [("", "non-empty"), ("x" * 65, "limit is 64"), (3, "non-empty string")],
)
def test_bad_actor_names(name: object, pattern: str) -> None:
    with pytest.raises(DefinitionError, match=pattern):
        rivetkit.actor(name)  # type: ignore[arg-type]


def test_events_must_use_event_tokens() -> None:
    with pytest.raises(DefinitionError, match=r"rivetkit\.event"):
        rivetkit.actor("a", events={"count": int})  # type: ignore[dict-item]


def test_state_that_cannot_be_stored() -> None:
    with pytest.raises(DefinitionError, match="cannot be stored"):
        rivetkit.actor("a", state={"f": object()})


def test_options_must_be_actor_options() -> None:
    with pytest.raises(DefinitionError, match="ActorOptions"):
        rivetkit.actor("a", options={"action_timeout": 1})  # type: ignore[arg-type]


def test_actor_options_validate_values() -> None:
    with pytest.raises(ValueError, match="action_timeout must be positive"):
        rivetkit.ActorOptions(action_timeout=0)
    with pytest.raises(TypeError, match="sleep_timeout must be a number"):
        rivetkit.ActorOptions(sleep_timeout="5")  # type: ignore[arg-type]
    assert rivetkit.ActorOptions().action_timeout == 60.0


def test_setup_rejects_duplicates_and_non_definitions() -> None:
    with pytest.raises(DefinitionError, match="names must be unique"):
        rivetkit.setup(rivetkit.actor("a"), rivetkit.actor("a"))
    with pytest.raises(DefinitionError, match=r"made with rivetkit\.actor"):
        rivetkit.setup("a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="setup\\(\\)"):
        rivetkit.setup(rivetkit.actor("b"), prot=1)


def test_definition_frozen_after_setup() -> None:
    a = rivetkit.actor("a")
    rivetkit.setup(a)

    def late(c):  # noqa: ANN001, ANN202
        return 1

    with pytest.raises(DefinitionError, match="already part of a registry"):
        a.action(late)


def test_typed_state_needs_annotation_to_be_restorable() -> None:
    @dataclass
    class S:
        n: int = 0

    a = rivetkit.actor("a")

    @a.create_state
    def make(c, input) -> S:  # noqa: ANN001
        return S()

    rivetkit.setup(a)
    assert a.state_codec.kind == "dataclass" and a.state_codec.cls is S
