"""Check scheduled arguments against the function's parameter annotations.

Annotations are read once, when a function is registered, and turned into
small checkers; scheduling then checks each argument against its checker.
Only the part of Python's type language that JSON values can satisfy is
checked: ``str``, ``int``, ``float`` (which accepts an ``int``), ``bool``
(never accepted as an ``int``), ``None``, ``list[T]``, ``dict[str, T]``,
unions (``T | None``, ``Optional[T]``, ``Union[...]``), ``Literal[...]`` and
``TypedDict`` classes. ``Any``, ``object``, a parameter without annotation and
any other annotation (a class such as ``datetime``, ``tuple[int, int]``, a
Protocol) are not checked: any JSON value is accepted there, as it was
before annotations were checked.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from django.utils.translation import gettext

__all__ = ["ArgumentTypeError", "Checker", "argument_checkers", "describe_value"]


class ArgumentTypeError(Exception):
    """A value does not match its annotation; ``path`` names where (``tags[2]``, ``opts.a``)."""

    def __init__(self, path: str, message: str, *, inside: bool = False) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        #: The value had the right shape (a dict for a TypedDict) but not its contents.
        self.inside = inside


class Checker:
    """Checks one value against one annotation; ``expected`` is how the annotation reads."""

    expected: str

    def check(self, value: Any, path: str) -> None:
        raise NotImplementedError

    def mismatch(self, value: Any, path: str) -> ArgumentTypeError:
        return ArgumentTypeError(
            path,
            # Translators: this phrase and the ones below end the sentence
            # "Argument %(path)s of %(name)s %(problem)s." (registry.py).
            gettext("must be %(expected)s, not %(given)s")
            % {"expected": self.expected, "given": describe_value(value)},
        )


def describe_value(value: Any) -> str:
    """The JSON-ish type name of ``value`` as a message shows it."""
    if value is None:
        return "None"
    return type(value).__name__


class _Scalar(Checker):
    def __init__(self, expected: str, accepts: Callable[[Any], bool]) -> None:
        self.expected = expected
        self._accepts = accepts

    def check(self, value: Any, path: str) -> None:
        if not self._accepts(value):
            raise self.mismatch(value, path)


_STR = _Scalar("str", lambda value: isinstance(value, str))
_INT = _Scalar("int", lambda value: isinstance(value, int) and not isinstance(value, bool))
_FLOAT = _Scalar(
    "float", lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
)
_BOOL = _Scalar("bool", lambda value: isinstance(value, bool))
_NONE = _Scalar("None", lambda value: value is None)


class _List(Checker):
    def __init__(self, item: Checker | None) -> None:
        self.item = item
        self.expected = f"list[{_expected(item)}]"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, (list, tuple)):
            raise self.mismatch(value, path)
        if self.item is not None:
            for index, item in enumerate(value):
                self.item.check(item, f"{path}[{index}]")


class _Dict(Checker):
    def __init__(self, item: Checker | None) -> None:
        self.item = item
        self.expected = f"dict[str, {_expected(item)}]"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise self.mismatch(value, path)
        if self.item is not None:
            for key, item in value.items():
                self.item.check(item, f"{path}.{key}")


class _Literal(Checker):
    def __init__(self, values: tuple[Any, ...]) -> None:
        self.values = values
        self.expected = f"Literal[{', '.join(repr(value) for value in values)}]"

    def check(self, value: Any, path: str) -> None:
        # type() as well as ==: True == 1, but Literal[1] does not accept True.
        if not any(type(value) is type(item) and value == item for item in self.values):
            raise ArgumentTypeError(
                path,
                gettext("must be one of %(values)s, not %(given)s")
                % {
                    "values": ", ".join(repr(item) for item in self.values),
                    "given": _short(value),
                },
            )


class _Union(Checker):
    def __init__(self, members: list[Checker]) -> None:
        self.members = members
        self.expected = " | ".join(member.expected for member in members)

    def check(self, value: Any, path: str) -> None:
        deeper: list[ArgumentTypeError] = []
        for member in self.members:
            try:
                member.check(value, path)
            except ArgumentTypeError as exc:
                if exc.inside or exc.path != path:
                    deeper.append(exc)
            else:
                return
        # One member took the value's shape (a list for list[int] | None) and
        # failed inside it: its message says more than the union's.
        if len(deeper) == 1:
            raise deeper[0]
        raise self.mismatch(value, path)


class _TypedDict(Checker):
    def __init__(
        self, cls: type, fields: dict[str, Checker | None], required: frozenset[str]
    ) -> None:
        self.cls = cls
        self.fields = fields
        self.required = required
        self.expected = cls.__name__

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise self.mismatch(value, path)
        missing = sorted(self.required - value.keys())
        if missing:
            raise ArgumentTypeError(
                path,
                gettext("is missing the key %(key)s, which %(expected)s requires")
                % {"key": repr(missing[0]), "expected": self.expected},
                inside=True,
            )
        for key, item in value.items():
            if key not in self.fields:
                declared = ", ".join(repr(name) for name in self.fields)
                raise ArgumentTypeError(
                    path,
                    (
                        gettext(
                            "has the key %(key)s, which %(expected)s does not declare "
                            "(it declares %(declared)s)"
                        )
                        if declared
                        else gettext(
                            "has the key %(key)s, which %(expected)s does not declare "
                            "(it declares none)"
                        )
                    )
                    % {"key": _short(key), "expected": self.expected, "declared": declared},
                    inside=True,
                )
            checker = self.fields[key]
            if checker is not None:
                checker.check(item, f"{path}.{key}")


def _expected(checker: Checker | None) -> str:
    return "Any" if checker is None else checker.expected


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


_SCALARS: dict[Any, Checker] = {
    str: _STR,
    int: _INT,
    float: _FLOAT,
    bool: _BOOL,
    None: _NONE,
    type(None): _NONE,
}


def compile_annotation(annotation: Any) -> Checker | None:
    """The checker for a resolved annotation; ``None`` when it is not checked (any JSON)."""
    if annotation is Any or annotation is object:
        return None
    try:
        scalar = _SCALARS.get(annotation)
    except TypeError:  # unhashable annotations are outside the subset
        scalar = None
    if scalar is not None:
        return scalar
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is typing.Annotated:
        return compile_annotation(args[0])
    if origin is Union or origin is types.UnionType:
        members = [compile_annotation(arg) for arg in args]
        if any(member is None for member in members):
            return None  # a union with an unchecked member accepts anything
        return _Union([member for member in members if member is not None])
    if origin is Literal:
        return _Literal(tuple(args))
    if annotation is list or origin is list:
        return _List(compile_annotation(args[0]) if args else None)
    if annotation is dict or origin is dict:
        if args and args[0] is not str:
            return None  # JSON keys are strings; dict[int, T] is outside the subset
        return _Dict(compile_annotation(args[1]) if args else None)
    if typing.is_typeddict(annotation):
        return _compile_typeddict(annotation)
    return None


def _compile_typeddict(cls: type) -> _TypedDict:
    hints = typing.get_type_hints(cls, include_extras=True)
    required = set(getattr(cls, "__required_keys__", frozenset()))
    fields: dict[str, Checker | None] = {}
    for key, hint in hints.items():
        # Read Required/NotRequired here too: with string annotations Python
        # 3.11 cannot see them when it builds __required_keys__.
        while get_origin(hint) in (typing.Required, typing.NotRequired, typing.Annotated):
            if get_origin(hint) is typing.Required:
                required.add(key)
            elif get_origin(hint) is typing.NotRequired:
                required.discard(key)
            hint = get_args(hint)[0]
        fields[key] = compile_annotation(hint)
    return _TypedDict(cls, fields, frozenset(required))


class _Annotations:
    """Something with ``__annotations__`` for :func:`typing.get_type_hints` to resolve."""

    def __init__(self, annotations: dict[str, Any]) -> None:
        self.__annotations__ = annotations


def argument_checkers(
    func: Callable[..., Any], signature: inspect.Signature, name: str
) -> Mapping[str, Checker]:
    """The checker of each checked parameter of ``func``, after the context.

    String annotations (``from __future__ import annotations``) are resolved
    in the function's module. The context's and the return annotation are
    not read, so they may name types imported only under ``TYPE_CHECKING``.
    An annotation that cannot be resolved is a :class:`TypeError` naming it.
    ``**kwargs: T`` is returned under the key ``"**"``.
    """
    target = inspect.unwrap(func)
    globalns = getattr(target, "__globals__", {})
    checkers: dict[str, Checker] = {}
    for param in list(signature.parameters.values())[1:]:
        if param.annotation is inspect.Parameter.empty:
            continue
        try:
            hint = typing.get_type_hints(
                _Annotations({param.name: param.annotation}),
                globalns=globalns,
                include_extras=True,
            )[param.name]
            checker = compile_annotation(hint)
        except Exception as exc:
            raise TypeError(
                f"The annotation {param.annotation!r} of the parameter {param.name!r} of "
                f"{name!r} cannot be resolved: {type(exc).__name__}: {exc}. Import what it "
                "names at module level (not only under TYPE_CHECKING), or remove it."
            ) from exc
        if checker is None:
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            checkers["**"] = checker
        elif param.kind is not inspect.Parameter.VAR_POSITIONAL:
            checkers[param.name] = checker
    return checkers
