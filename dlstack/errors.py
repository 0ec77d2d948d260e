"""Errors the user can fix, and how the command line words them.

``scripts/dlstack`` turns every error listed in :data:`USER_ERRORS` into one message on standard
error (or a JSON object on standard output with ``--json``) and exit code 2; anything else is a
bug and keeps its traceback (:data:`BUGS` among them). :class:`UserError` is for new code; the
``ValueError``, ``RuntimeError`` and ``LookupError`` families are accepted too, because the
package's own error types (``ResolutionError``, ``LockError``, ``MatrixError``, ...) derive from them.
"""

from __future__ import annotations

import yaml

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """Bad input (an argument, a file's content) that the message names, with what is accepted."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    OSError,
    yaml.YAMLError,
    ValueError,
    RuntimeError,
    LookupError,
)
# Input is checked where it is read, so a KeyError or IndexError escaping to the command line is a bug.
BUGS: tuple[type[BaseException], ...] = (KeyError, IndexError)


def describe(exc: BaseException) -> str:
    """The error as one line: OS errors and YAML syntax errors name the file, the rest say their message."""
    if isinstance(exc, OSError) and exc.filename is not None:
        paths = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        return f"{paths}: {exc.strerror or exc}"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = f" ({exc.context})" if exc.context else ""
        return f"{mark.name}:{mark.line + 1}:{mark.column + 1}: {exc.problem}{context}"
    return str(exc)
