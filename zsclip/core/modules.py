"""A package that is also its feature's function: `zsclip.classify(model, classifier, paths)` and
`import zsclip.classify` both hold. Python sets a package's submodule as an attribute of its parent on import, so a
function and a package of one name cannot both be that attribute; a callable package is both."""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from collections.abc import Callable


def callable_package(name: str, function: Callable) -> None:
    """Make the module `name` call `function` when called; inspect.signature (help, IDEs) shows the function's,
    and pickling it pickles the function. Where a real function is needed (ray.remote), use the function itself:
    zsclip.classify.classify, zsclip.evaluate.evaluate."""

    class CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

        def __reduce_ex__(self, protocol):  # pickled (multiprocessing, joblib) as the function it calls
            return function_named, (function.__module__, function.__qualname__)

    module = sys.modules[name]
    module.__class__ = CallablePackage
    module.__signature__ = inspect.signature(function)


def function_named(module: str, name: str) -> Callable:
    """The function `name` of `module`: what a pickled callable package loads as."""
    return getattr(importlib.import_module(module), name)
