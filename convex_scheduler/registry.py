"""Registered functions: what may be scheduled and how to call it.

A scheduled row names its function by string. The worker looks that string
up here and nowhere else, so a name that was never registered with one of the
decorators is never imported or run.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast, overload

from django.utils.translation import gettext

from .exceptions import SchedulingError
from .retries import Retry, as_retry
from .typecheck import ArgumentTypeError, Checker, argument_checkers

__all__ = [
    "FunctionKind",
    "RegisteredFunction",
    "action",
    "internal_action",
    "internal_mutation",
    "mutation",
    "registry",
]

F = TypeVar("F", bound=Callable[..., Any])

#: What the first parameter, the context, may be called (``_ctx`` when unused).
CONTEXT_PARAMETER_NAMES = frozenset({"ctx", "_ctx"})


class FunctionKind(enum.StrEnum):
    MUTATION = "mutation"
    ACTION = "action"


@dataclass(frozen=True)
class RegisteredFunction:
    name: str
    kind: FunctionKind
    internal: bool
    func: Callable[..., Any]
    signature: inspect.Signature
    #: Parameter name → the checker of its annotation (``"**"`` for ``**kwargs``);
    #: parameters that are not checked are absent. See :mod:`convex_scheduler.typecheck`.
    arg_types: Mapping[str, Checker] = field(default_factory=dict)
    #: An action's opt-in retries (``@action(retry=...)``); None: at most once.
    retry: Retry | None = None
    #: The pool whose parallelism limit applies (``@action(pool=...)``).
    pool: str = ""

    def bind_check(self, args: dict[str, Any]) -> None:
        """Raise :class:`SchedulingError` unless ``fn(ctx, **args)`` would bind and
        every argument matches its parameter's annotation."""
        try:
            self.signature.bind(None, **args)
        except TypeError as exc:
            raise SchedulingError(
                gettext(
                    "Arguments do not match the signature of %(name)s %(signature)s: %(error)s."
                )
                % {"name": repr(self.name), "signature": self.signature, "error": exc}
            ) from None
        if not self.arg_types:
            return
        extra = self.arg_types.get("**")
        for key, value in args.items():
            checker = self.arg_types.get(
                key, extra if key not in self.signature.parameters else None
            )
            if checker is None:
                continue
            try:
                checker.check(value, key)
            except ArgumentTypeError as exc:
                raise SchedulingError(
                    # Translators: problem is one of typecheck.py's "must be …" phrases.
                    gettext("Argument %(path)s of %(name)s %(problem)s.")
                    % {"path": repr(exc.path), "name": repr(self.name), "problem": exc.message}
                ) from None


class FunctionRegistry:
    """Name → :class:`RegisteredFunction`, filled by the decorators."""

    def __init__(self) -> None:
        self._functions: dict[str, RegisteredFunction] = {}
        self._by_callable: dict[Callable[..., Any], RegisteredFunction] = {}
        self._lock = threading.Lock()
        self.startup_names: frozenset[str] = frozenset()

    def register(
        self, func: Callable[..., Any], kind: FunctionKind, *, internal: bool, name: str | None
    ) -> RegisteredFunction:
        if not callable(func):
            raise TypeError(f"Only callables can be registered, not {func!r}.")
        if name is None:
            name = f"{func.__module__}:{func.__qualname__}"
        if not isinstance(name, str) or not name or len(name) > 255:
            raise TypeError("A function name must be a non-empty string of at most 255 characters.")
        if kind == FunctionKind.MUTATION and (
            inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
        ):
            raise TypeError(
                f"{name!r} is an async def mutation. A mutation runs inside a database "
                "transaction, which Django does not share with async code: make it a plain "
                "def, or an @action (actions may be async def)."
            )
        signature = inspect.signature(func)
        params = list(signature.parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(
                f"{name!r} must take the context as its first positional parameter: "
                "def fn(ctx, ...)."
            )
        if params[0].name not in CONTEXT_PARAMETER_NAMES:
            raise TypeError(
                f"{name!r} must take the context as its first positional parameter, "
                f"named ctx: def fn(ctx, ...), not def fn({params[0].name}, ...). Arguments "
                "are passed by keyword after it."
            )
        arg_types = argument_checkers(func, signature, name)
        entry = RegisteredFunction(name, kind, internal, func, signature, arg_types)
        with self._lock:
            existing = self._functions.get(name)
            if existing is not None and _origin(existing.func) != _origin(func):
                raise ValueError(
                    f"The name {name!r} is already registered for "
                    f"{existing.func.__module__}.{existing.func.__qualname__}."
                )
            self._functions[name] = entry
            self._by_callable[func] = entry
        return entry

    def mark_startup(self) -> None:
        """Remember what is registered once apps are ready: what workers know.

        Called by ``AppConfig.ready`` after the ``functions`` modules were
        imported; the system check ``convex_scheduler.W003`` names functions
        registered later (by views, say), which workers never import.
        """
        with self._lock:
            self.startup_names = frozenset(self._functions)

    def replace(self, entry: RegisteredFunction) -> None:
        """Store ``entry`` in place of the registration of the same name and function."""
        with self._lock:
            self._functions[entry.name] = entry
            self._by_callable[entry.func] = entry

    def get(self, name: str) -> RegisteredFunction | None:
        return self._functions.get(name)

    def resolve(self, ref: Any) -> RegisteredFunction:
        """The registration for a decorated function or its name, or a :class:`SchedulingError`."""
        if isinstance(ref, RegisteredFunction):
            return ref
        if isinstance(ref, str):
            entry = self._functions.get(ref)
            if entry is None:
                raise SchedulingError(
                    gettext(
                        "No function is registered under the name %(name)s. Register it with "
                        "@mutation, @action, @internal_mutation or @internal_action in an "
                        "installed app's functions module."
                    )
                    % {"name": repr(ref)}
                )
            return entry
        if callable(ref):
            try:
                return self._by_callable[ref]
            except (KeyError, TypeError):
                pass
            name = getattr(ref, "__qualname__", repr(ref))
            raise SchedulingError(
                gettext(
                    "%(name)s is not a registered function. Only functions decorated with "
                    "@mutation, @action, @internal_mutation or @internal_action can be "
                    "scheduled."
                )
                % {"name": name}
            )
        raise SchedulingError(
            gettext(
                "A function reference must be a registered function or its name (a string), "
                "not %(type)s."
            )
            % {"type": type(ref).__name__}
        )

    def all(self) -> list[RegisteredFunction]:
        return sorted(self._functions.values(), key=lambda entry: entry.name)

    def unregister(self, name: str) -> None:
        with self._lock:
            entry = self._functions.pop(name, None)
            if entry is not None:
                self._by_callable.pop(entry.func, None)


def _origin(func: Callable[..., Any]) -> tuple[str, str]:
    # Re-importing a module (autoreload, importlib.reload) registers a new
    # function object under the same name; that is not a clash.
    return (func.__module__, func.__qualname__)


registry = FunctionRegistry()


class _Decorator(Protocol):
    """``@mutation`` and friends: used bare, or called with ``name=`` (and, for
    actions, ``retry=`` and ``pool=``)."""

    @overload
    def __call__(self, func: F, /) -> F: ...
    @overload
    def __call__(
        self, *, name: str | None = None, retry: Retry | bool | None = None, pool: str = ""
    ) -> Callable[[F], F]: ...


def check_pool(pool: Any) -> str:
    """A pool name, or a :class:`SchedulingError` saying what a pool name is."""
    if not isinstance(pool, str) or len(pool) > 100 or (pool and not pool.isprintable()):
        raise SchedulingError(
            gettext("A pool is a name of at most 100 printable characters, not %(pool)s.")
            % {"pool": repr(pool)},
            field="pool",
        )
    return pool


def _decorator(kind: FunctionKind, internal: bool) -> _Decorator:
    def decorate(
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retry: Retry | bool | None = None,
        pool: str = "",
    ) -> Callable[..., Any]:
        policy = as_retry(retry)
        if kind == FunctionKind.MUTATION and (policy is not None or pool):
            raise TypeError(
                "Mutations take no retry= or pool=: they already retry transient database "
                "errors until they succeed, and are deterministic otherwise."
            )
        check_pool(pool)

        def register(target: Callable[..., Any]) -> Callable[..., Any]:
            entry = registry.register(target, kind, internal=internal, name=name)
            if policy is not None or pool:
                registry.replace(dataclasses.replace(entry, retry=policy, pool=pool))
            return target

        if func is None:
            return register
        return register(func)

    # mypy cannot match one implementation against the protocol's overloads.
    return cast(_Decorator, decorate)


mutation = _decorator(FunctionKind.MUTATION, internal=False)
mutation.__doc__ = """Register a public mutation: runs exactly once, in one transaction."""
action = _decorator(FunctionKind.ACTION, internal=False)
action.__doc__ = """Register a public action: runs at most once, outside any transaction."""
internal_mutation = _decorator(FunctionKind.MUTATION, internal=True)
internal_mutation.__doc__ = """Register a mutation that cannot be scheduled over the API."""
internal_action = _decorator(FunctionKind.ACTION, internal=True)
internal_action.__doc__ = """Register an action that cannot be scheduled over the API."""


#: The registered names under which ``django.tasks`` tasks enqueued through
#: :class:`convex_scheduler.tasks.SchedulerBackend` run: every worker knows them
#: from start-up, and the row's arguments name the task to import.
TASK_ACTION_NAME = "django.tasks:action"
TASK_MUTATION_NAME = "django.tasks:mutation"


def _run_task_action(
    ctx: Any, task: str, backend: str, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """Run a ``django.tasks`` task as an action (``OPTIONS["run_as"] == "action"``)."""
    from .tasks import run_task

    return run_task(ctx, task=task, backend=backend, args=args, kwargs=kwargs)


def _run_task_mutation(
    ctx: Any, task: str, backend: str, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """Run a ``django.tasks`` task as a mutation (``OPTIONS["run_as"] == "mutation"``)."""
    from .tasks import run_task

    return run_task(ctx, task=task, backend=backend, args=args, kwargs=kwargs)


internal_action(name=TASK_ACTION_NAME)(_run_task_action)
internal_mutation(name=TASK_MUTATION_NAME)(_run_task_mutation)
