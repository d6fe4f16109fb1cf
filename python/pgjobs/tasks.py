"""The task registry: `@pgjobs.task` maps task identifiers to handlers."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

Handler = Callable[..., Any]

_registry: dict[str, Handler] = {}


def task(name_or_func: str | Handler | None = None, *, timeout: float | None = None) -> Any:
    """Register a handler: `@task` (name = function name) or `@task("send_email")`.

    `timeout` (seconds) is the task's default limit per attempt; a job's own timeout wins.
    """
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")

    def register(func: Handler, name: str) -> Handler:
        if not callable(func):
            raise TypeError(f"@task needs a callable, got {func!r}")
        if name in _registry and _registry[name] is not func:
            raise ValueError(f"task {name!r} is already registered to {_registry[name]!r}")
        _registry[name] = func
        func.pgjobs_task = name  # type: ignore[attr-defined]
        func.pgjobs_timeout = timeout  # type: ignore[attr-defined]
        return func

    if callable(name_or_func):
        return register(name_or_func, name_or_func.__name__)
    if name_or_func is not None and not isinstance(name_or_func, str):
        raise TypeError("@task takes a task name (str) or decorates a function")

    def decorator(func: Handler) -> Handler:
        return register(func, name_or_func or func.__name__)

    return decorator


def registered() -> dict[str, Handler]:
    """A copy of the registry: task identifier -> handler."""
    return dict(_registry)


def default_timeout(handler: Handler) -> float | None:
    """The handler's @task(timeout=...) in seconds, if it has one."""
    return getattr(handler, "pgjobs_timeout", None)


def is_async(handler: Handler) -> bool:
    """True when the handler must be awaited rather than run in a thread."""
    call = type(handler).__call__ if not inspect.isroutine(handler) else None
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def import_task_modules(modules: list[str]) -> dict[str, Handler]:
    """Import each module (dotted name or path to a .py file) and return the registry."""
    for module in modules:
        if module.endswith(".py"):
            spec = importlib.util.spec_from_file_location(_module_name(module), module)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load task file {module}")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            importlib.import_module(module)
    return registered()


def _module_name(path: str) -> str:
    stem = path.rsplit("/", 1)[-1][: -len(".py")]
    return f"pgjobs_tasks_{stem}"
