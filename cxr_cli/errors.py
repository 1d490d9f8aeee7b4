"""How the command fails: one line on stderr, ``error: <code>: <message>``, and a non-zero
exit code (2 for bad input), never a traceback (unless --verbose asks for one)."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from cxr_cli.runtime import flags
from shared.errors import CxrError

USAGE = 2  # bad input: an option, a file, a dataset, a version that is not there
FAILED = 1  # the command could not finish for another reason

# The modules each extra of pyproject.toml brings, as they are imported (tests/cli/
# test_errors.py checks that every package of each extra is here).
EXTRA_MODULES = {
    "api": ("fastapi", "uvicorn", "multipart", "fastapi_offline", "threadpoolctl",
            "onnxruntime", "openvino"),
    "worker": ("matplotlib", "sklearn", "imagehash", "markdown_it", "tf2onnx", "onnx",
               "onnxruntime", "sympy", "openvino"),
}


class MissingExtra(CxrError):
    code = "missing_extra"


class InvalidOption(CxrError):
    code = "validation_error"


def require_extras(command: str, *extras: str) -> None:
    """Fail before any work when an extra the command needs is not installed."""
    missing = {extra: [name for name in EXTRA_MODULES[extra]
                       if importlib.util.find_spec(name) is None] for extra in extras}
    lacking = [extra for extra in extras if missing[extra]]
    if lacking:
        names = sorted({name for extra in lacking for name in missing[extra]})
        raise MissingExtra(
            f"{command} needs the {' and '.join(lacking)} extra"
            f"{'s' if len(lacking) > 1 else ''}: pip install 'cxr-service[{','.join(lacking)}]'"
            f" (not installed: {', '.join(names)})")


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces as single spaces."""
    return " ".join(text.split())


def validation_message(exc: ValidationError, name: Callable[[Any], str] | None = None,
                       words: Callable[[str], str] | None = None) -> str:
    """Pydantic's errors in one line, each naming its field as ``name(field)`` spells it, its
    message put in ``words``."""
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        message = words(message) if words else message
        field = error["loc"][0] if error["loc"] else None
        if field is None:
            parts.append(message)
            continue
        got = error.get("input")
        shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
        parts.append(f"{name(field) if name else field}: {message}{shown}")
    return one_line("; ".join(parts))


def _settings_name(field: Any) -> str:
    return f"CXR_{str(field).upper()}"


def _fail(code: str, message: str, status: int) -> NoReturn:
    typer.echo(f"error: {code}: {one_line(message)}", err=True)
    sys.exit(status)


def _parsing_failure(exc: typer.TyperException) -> NoReturn:
    """What typer's own parsing refused (its click's errors derive from TyperException)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # as typer tells it; it printed the help
        sys.exit(exc.exit_code)
    code = "usage_error" if exc.exit_code == USAGE else "invalid_input"
    _fail(code, exc.format_message(), exc.exit_code or USAGE)


class OneLineErrors(TyperGroup):
    """The ``cxr`` group: every failure, whatever raised it, ends as one line."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode,
                                windows_expand_args, **extra)
        flags.verbose = False
        try:
            status = super().main(args, prog_name, complete_var, False, windows_expand_args,
                                  **extra)
        except typer.TyperException as exc:
            _parsing_failure(exc)
        except typer.Abort:
            _fail("aborted", "stopped by the user", FAILED)
        except CxrError as exc:
            _fail(exc.code, exc.message, USAGE)
        except ValidationError as exc:  # the settings: CXR_ variables
            names = _settings_name if exc.title == "Settings" else None
            _fail("validation_error", validation_message(exc, names), USAGE)
        except Exception as exc:
            if flags.verbose:
                traceback.print_exc()
            hint = "" if flags.verbose else " (--verbose shows the traceback)"
            code = "os_error" if isinstance(exc, OSError) else "internal_error"
            _fail(code, f"{type(exc).__name__}: {exc}{hint}", FAILED)
        sys.exit(status if isinstance(status, int) else 0)
