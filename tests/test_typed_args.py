"""Arguments are checked against the function's annotations when scheduling (issue 15)."""

from typing import Any, Literal, NotRequired, Optional, Required, TypedDict, Union

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from convex_scheduler import SchedulingError, action, mutation, scheduler
from convex_scheduler.models import ScheduledFunction
from convex_scheduler.registry import registry


class Address(TypedDict):
    street: str
    number: NotRequired[int]


class Partial(TypedDict, total=False):
    label: str
    weight: Required[float]


@pytest.fixture
def register():
    """Register functions for one test and unregister them afterwards."""
    names = []

    def _register(func, *, decorator=mutation, **kwargs):
        decorator(func, **kwargs) if not kwargs else decorator(**kwargs)(func)
        entry = registry.resolve(func)
        names.append(entry.name)
        return entry

    yield _register
    for name in names:
        registry.unregister(name)


def send(ctx, body: str, author: str, count: int = 1, score: float = 0.0) -> None:
    pass


def shapes(
    ctx,
    tags: list[str] | None = None,
    scores: dict[str, int] | None = None,
    flag: bool = False,
    mode: Literal["fast", "slow", 3] = "fast",
    either: Union[int, str] = 0,  # noqa: UP007  (the typing spelling is supported too)
    maybe: Optional[str] = None,  # noqa: UP045
    nothing: None = None,
    nested: list[dict[str, list[int]]] | None = None,
    address: Address | None = None,
    partial: Partial | None = None,
    anything: Any = None,
    untyped=None,
    **extra: int,
) -> None:
    pass


def check(entry, args):
    entry.bind_check(args)


def refusal(entry, args):
    with pytest.raises(SchedulingError) as info:
        entry.bind_check(args)
    return str(info.value)


def test_the_message_names_the_argument_the_expected_and_the_given_type(register):
    entry = register(send)
    assert refusal(entry, {"body": "hi", "author": 5}) == (
        f"Argument 'author' of {entry.name!r} must be str, not int."
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"body": "hi", "author": "ann", "count": True}, "'count' of {name} must be int, not bool"),
        ({"body": "hi", "author": "ann", "count": 1.0}, "'count' of {name} must be int, not float"),
        (
            {"body": "hi", "author": "ann", "score": False},
            "'score' of {name} must be float, not bool",
        ),
        ({"body": None, "author": "ann"}, "'body' of {name} must be str, not None"),
        ({"body": ["hi"], "author": "ann"}, "'body' of {name} must be str, not list"),
    ],
)
def test_scalars(register, args, message):
    entry = register(send)
    assert message.format(name=repr(entry.name)) in refusal(entry, args)


def test_int_is_a_float_but_bool_is_neither(register):
    entry = register(send)
    check(entry, {"body": "hi", "author": "ann", "count": 2, "score": 3})
    check(entry, {"body": "hi", "author": "ann", "score": 2.5})


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"tags": ["a", "b"], "scores": {"a": 1}, "flag": True, "mode": "slow"},
        {"tags": None, "scores": None, "mode": 3, "either": "x", "maybe": "y"},
        {"either": 5, "nothing": None, "nested": [{"a": [1, 2]}, {}]},
        {"address": {"street": "Main"}, "partial": {"weight": 1}},
        {"address": {"street": "Main", "number": 5}, "partial": {"weight": 1.5, "label": "x"}},
        {"anything": {"deep": [1, "x", None]}, "untyped": [True]},
        {"whatever": 5, "more": -1},
    ],
)
def test_values_that_match(register, args):
    check(register(shapes), args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"tags": "a"}, "Argument 'tags' of {name} must be list[str] | None, not str."),
        ({"tags": ["a", 2]}, "Argument 'tags[1]' of {name} must be str, not int."),
        ({"scores": {"a": "1"}}, "Argument 'scores.a' of {name} must be int, not str."),
        ({"scores": [1]}, "Argument 'scores' of {name} must be dict[str, int] | None, not list."),
        ({"flag": 1}, "Argument 'flag' of {name} must be bool, not int."),
        (
            {"mode": "medium"},
            "Argument 'mode' of {name} must be one of 'fast', 'slow', 3, not 'medium'.",
        ),
        ({"mode": 3.0}, "Argument 'mode' of {name} must be one of 'fast', 'slow', 3, not 3.0."),
        ({"either": 1.5}, "Argument 'either' of {name} must be int | str, not float."),
        ({"either": True}, "Argument 'either' of {name} must be int | str, not bool."),
        ({"maybe": 1}, "Argument 'maybe' of {name} must be str | None, not int."),
        ({"nothing": 0}, "Argument 'nothing' of {name} must be None, not int."),
        (
            {"nested": [{"a": [1, "2"]}]},
            "Argument 'nested[0].a[1]' of {name} must be int, not str.",
        ),
        (
            {"address": {}},
            "Argument 'address' of {name} is missing the key 'street', which Address requires.",
        ),
        ({"address": {"street": 1}}, "Argument 'address.street' of {name} must be str, not int."),
        (
            {"address": {"street": "s", "number": "5"}},
            "Argument 'address.number' of {name} must be int, not str.",
        ),
        (
            {"address": {"street": "s", "zip": "5"}},
            "Argument 'address' of {name} has the key 'zip', which Address does not declare "
            "(it declares 'street', 'number').",
        ),
        ({"address": "Main"}, "Argument 'address' of {name} must be Address | None, not str."),
        (
            {"partial": {"label": "x"}},
            "Argument 'partial' of {name} is missing the key 'weight', which Partial requires.",
        ),
        ({"whatever": "5"}, "Argument 'whatever' of {name} must be int, not str."),
    ],
)
def test_values_that_do_not_match(register, args, message):
    entry = register(shapes)
    assert refusal(entry, args) == message.format(name=repr(entry.name))


def test_string_annotations_are_resolved_once_at_registration(register):
    def later(ctx, tags: "list[str]", address: "Address | None" = None) -> "Nowhere":  # noqa: F821
        pass

    entry = register(later)
    assert set(entry.arg_types) == {"tags", "address"}
    assert "must be list[str], not str" in refusal(entry, {"tags": "a"})
    assert "'address.street'" in refusal(entry, {"tags": [], "address": {"street": 5}})


def test_the_context_annotation_is_not_resolved(register):
    def typed_ctx(ctx: "MutationContextOnlyUnderTypeChecking", name: str) -> None:  # noqa: F821
        pass

    check(register(typed_ctx), {"name": "x"})


def test_an_unresolvable_annotation_is_an_error_at_registration():
    def broken(ctx, when: "Nowhere") -> None:  # noqa: F821
        pass

    with pytest.raises(TypeError, match=r"'when' of .*broken.* cannot be resolved: NameError"):
        mutation(broken)
    assert registry.get(f"{__name__}:{broken.__qualname__}") is None


def test_annotations_outside_the_subset_accept_any_json(register):
    from datetime import datetime

    def other(ctx, when: datetime, pair: tuple[int, int], keyed: dict[int, str]) -> None:
        pass

    entry = register(other)
    assert entry.arg_types == {}
    check(entry, {"when": "2030-01-01", "pair": [1, 2], "keyed": {"1": "a"}})


def test_a_function_without_a_context_first_is_refused_at_registration():
    def no_ctx(body: str) -> None:
        pass

    with pytest.raises(TypeError, match=r"first positional parameter, named ctx.*not def fn\(body"):
        mutation(no_ctx)
    with pytest.raises(TypeError, match="first positional parameter"):

        @action
        def nothing() -> None:
            pass


@pytest.mark.django_db
def test_run_after_and_run_at_refuse_a_wrong_type_and_schedule_nothing(register):
    entry = register(send)
    with pytest.raises(SchedulingError, match=r"'author' .* must be str, not int") as info:
        scheduler.run_after(0, send, {"body": "hi", "author": 5})
    assert info.value.field == "args"
    with pytest.raises(SchedulingError, match=r"'author' .* must be str, not int"):
        scheduler.run_at(timezone.now(), entry.name, {"body": "hi", "author": 5})
    assert not ScheduledFunction.objects.exists()
    scheduler.run_after(0, send, {"body": "hi", "author": "ann"})
    assert ScheduledFunction.objects.get().args == {"body": "hi", "author": "ann"}


@pytest.mark.django_db
def test_the_api_answers_400_naming_the_argument(register):
    entry = register(send)
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(
        "/api/scheduled-functions/",
        {"function": entry.name, "args": {"body": "hi", "author": 5}, "delay_ms": 0},
        format="json",
    )
    assert response.status_code == 400, response.data
    assert response.data["args"] == [f"Argument 'author' of {entry.name!r} must be str, not int."]
    assert not ScheduledFunction.objects.exists()
