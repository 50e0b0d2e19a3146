"""The ``eightbit`` command: thin subcommands over the library.

Exit codes: 0 success, 1 a numerical check failed, 2 bad usage or bad input (one line,
no traceback). Each subcommand lives in its own module and is registered here.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from eightbit import __version__
from eightbit.errors import EightbitError


class _Group(click.Group):
    """Turns EightbitError into one clear line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EightbitError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eightbit")
def main() -> None:
    """eightbit: turn trained float networks into exact int8 networks."""


def _register() -> None:
    from eightbit.cli import calibrate, codegen, fi, quantize, report, run, validate

    main.add_command(fi.fi)
    main.add_command(calibrate.calibrate)
    main.add_command(quantize.quantize_command)
    main.add_command(validate.validate_command)
    main.add_command(report.report_command)
    main.add_command(run.run)
    main.add_command(codegen.codegen_command)


_register()
