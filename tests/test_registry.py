import pytest

from convex_scheduler import SchedulingError, action, internal_mutation, mutation
from convex_scheduler.registry import FunctionKind, registry

from . import functions


def test_default_names_are_module_and_qualname():
    entry = registry.resolve(functions.increment)
    assert entry.name == "tests.functions:increment"
    assert (entry.kind, entry.internal) == (FunctionKind.MUTATION, False)
    assert registry.resolve("tests.functions:increment") is entry


def test_explicit_names_and_visibility():
    entry = registry.resolve("tests:internal_record")
    assert (entry.kind, entry.internal, entry.func) == (
        FunctionKind.ACTION,
        True,
        functions.internal_record,
    )


def test_decorators_return_the_function_unchanged():
    def plain(ctx, x):
        return x * 2

    try:
        assert mutation(plain) is plain
        assert plain(None, 2) == 4
    finally:
        registry.unregister(
            "tests.test_registry:test_decorators_return_the_function_unchanged.<locals>.plain"
        )


def test_a_name_cannot_be_taken_twice():
    @action(name="tests:taken")
    def first(ctx):
        pass

    try:
        with pytest.raises(ValueError, match="already registered"):

            @internal_mutation(name="tests:taken")
            def second(ctx):
                pass
    finally:
        registry.unregister("tests:taken")


def test_functions_must_take_a_context():
    with pytest.raises(TypeError, match="first positional parameter"):

        @mutation
        def no_ctx():
            pass

    with pytest.raises(TypeError, match="first positional parameter"):

        @mutation
        def keyword_only(*, ctx):
            pass


def test_resolving_something_unregistered_is_a_scheduling_error():
    with pytest.raises(SchedulingError, match="not a registered function"):
        registry.resolve(print)


def test_discovered_from_installed_apps_functions_module():
    names = {entry.name for entry in registry.all()}
    assert {"tests.functions:increment", "tests:internal_increment"} <= names
