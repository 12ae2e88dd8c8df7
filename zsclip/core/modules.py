"""A package that is also its feature's function: `zsclip.classify(model, classifier, paths)` and
`import zsclip.classify` both hold. Python sets a package's submodule as an attribute of its parent on import, so a
function and a package of one name cannot both be that attribute; a callable package is both."""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable


def callable_package(name: str, function: Callable) -> None:
    """Make the module `name` call `function` when called; inspect.signature (help, IDEs) shows the function's."""

    class CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    module = sys.modules[name]
    module.__class__ = CallablePackage
    module.__signature__ = inspect.signature(function)
