"""The typer application, and the one place where errors become one line.

Errors print one line on stderr and exit non-zero, never a traceback.
Exit codes: 0 success, also when stdout is closed early (`| head -1`),
except `check`, whose status still says whether an address is blocked;
1 `check` found a blocked address, `remove` found an entry not listed, or a
probe/send failed; 2 bad input, usage, configuration or store errors;
130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperArgument, TyperCommand, TyperGroup

from smtpguard import __version__

SUMMARY = "smtpguard: an outgoing SMTP relay that refuses recipients on your suppression list."


def known_error(exc: BaseException) -> str | None:
    """The one line for an error a user can fix, None for a bug."""
    from smtpguard.cli.options import Failure
    from smtpguard.config import ConfigError
    from smtpguard.inputs import InvalidInput
    from smtpguard.suppression.addresses import AddressError
    from smtpguard.suppression.formats import ImportFormatError
    from smtpguard.suppression.store import StoreError

    if isinstance(exc, ConfigError | StoreError | ImportFormatError | AddressError | InvalidInput | Failure):
        return str(exc)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return None


def quiet_stdout() -> None:
    """The reader went away (`| head`): drop what is still buffered instead of failing at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (tests): nothing to flush at exit
        pass


class Command(TyperCommand):
    """A command whose help shows an argument by its metavar (ENTRY), not its Python type (<list[str]>)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar is not None:
                param.display_type_rich = no_type  # type: ignore[method-assign]


def no_type(ctx: Any) -> None:
    return None


ORDER: tuple[str, ...] = (
    *("import", "add", "remove", "check", "list", "export"),
    *("log", "stats", "allow", "user", "token", "sync", "init", "rules", "config", "serve", "demo", "send"),
)


class Group(TyperGroup):
    """The root command group: click's usage errors and our own errors as one line each."""

    def list_commands(self, ctx: Any) -> list[str]:
        """Help lists the commands in the order of the day's work, not of registration."""
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))

    def invoke(self, ctx: Any) -> Any:
        """A reader that went away (`| head -1`) ends the command quietly, with success."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            quiet_stdout()
            raise typer.Exit(0) from None

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        code = self.guarded(args, prog_name, complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def guarded(self, args: Sequence[str] | None, prog_name: str | None, complete_var: str | None, **extra: Any) -> int:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            return rv if isinstance(rv, int) else 0
        except NoArgsIsHelpError as exc:
            exc.show()
            return exc.exit_code
        except ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            message = exc.format_message().replace("\n", " ").replace("Value error, ", "").rstrip(".")
            return say(message + hint, exc.exit_code)
        except typer.Abort:
            return say("aborted", 1)
        except BrokenPipeError:
            quiet_stdout()
            return 0
        except Exception as exc:
            line = known_error(exc)
            if line is None:
                raise
            return say(line, 2)


def say(line: str, code: int) -> int:
    typer.echo(f"smtpguard: {line}", err=True)
    return code


app = typer.Typer(
    cls=Group,
    help=SUMMARY,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
user_app = typer.Typer(help='Accounts for auth = "local".', no_args_is_help=True, rich_markup_mode=None)
config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(user_app, name="user")
app.add_typer(config_app, name="config")
token_app = typer.Typer(help="Bearer tokens for the HTTP API.", no_args_is_help=True, rich_markup_mode=None)
sync_app = typer.Typer(help="Pull connectors ([[sync]] entries).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(token_app, name="token")
app.add_typer(sync_app, name="sync")


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"smtpguard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """smtpguard: an outgoing SMTP relay that refuses recipients on your suppression list."""
