"""The ``eightbit`` command: thin subcommands over the library.

Exit codes: 0 success, 1 a numerical check failed, 2 bad usage or bad input (one line,
no traceback), 130 interrupted (Ctrl-C; one line). Each subcommand lives in its own
module, imported only when it runs: start-up stays short, and a Ctrl-C during the heavy
imports (numpy, onnx, ONNX Runtime) is reported like any other.
"""

from __future__ import annotations

import sys

try:  # Ctrl-C while Python starts the command: one line too, not a traceback.
    import errno
    import importlib
    import signal
    from typing import Any, NoReturn

    import click

    from eightbit import __version__
    from eightbit.errors import EightbitError
except KeyboardInterrupt:
    sys.stderr.write("error: interrupted (Ctrl-C) while starting; nothing was written\n")
    raise SystemExit(130) from None

# command name -> (module, attribute), in the order --help lists them
_COMMANDS = {
    "fi": ("eightbit.cli.fi", "fi"),
    "calibrate": ("eightbit.cli.calibrate", "calibrate"),
    "quantize": ("eightbit.cli.quantize", "quantize_command"),
    "validate": ("eightbit.cli.validate", "validate_command"),
    "report": ("eightbit.cli.report", "report_command"),
    "run": ("eightbit.cli.run", "run"),
    "codegen": ("eightbit.cli.codegen", "codegen_command"),
}
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C
_ctrl_c_seen = False


def _on_ctrl_c(signum: int, frame: object) -> None:
    """Python's own Ctrl-C handler, remembering that it ran: a KeyboardInterrupt raised in
    a C extension's import reaches us as another error (ONNX Runtime's becomes
    "ImportError: initialization failed"), and is still an interruption."""
    global _ctrl_c_seen
    _ctrl_c_seen = True
    raise KeyboardInterrupt


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _interrupted() -> NoReturn:
    _forget_unhandled_interrupt()
    _fail("interrupted (Ctrl-C); outputs are written completely or not at all", INTERRUPTED)


def _forget_unhandled_interrupt() -> None:
    """CPython remembers a KeyboardInterrupt that left code run by ``PyRun_*`` (pybind11's
    ``py::eval``, inside ONNX Runtime's module, is such code) and, at exit, kills the
    process with SIGINT instead of returning our exit code, though we caught the
    interrupt: 3 runs in 40 with Ctrl-C from outside. Running ``pass`` through
    ``PyRun_SimpleString`` clears that flag (``run_eval_code_obj`` resets it)."""
    try:
        import ctypes

        ctypes.pythonapi.PyRun_SimpleString(b"pass")
    except (ImportError, AttributeError, OSError):  # not CPython, or no C API: nothing kept
        pass


def _usage_error(exc: click.UsageError) -> NoReturn:
    """click's usage errors in the same one-line form, with where to look for help."""
    command = exc.ctx.command_path if exc.ctx is not None else "eightbit"
    _fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)


def _os_message(exc: OSError) -> str:
    """One line for a read or write that the operating system refused."""
    what = exc.strerror or type(exc).__name__
    if exc.filename is None:
        return f"{what}: {exc}" if str(exc) and str(exc) != what else what
    return f"cannot use {str(exc.filename)!r}: {what}"


class _Group(click.Group):
    """Loads subcommands lazily; bad input, write errors and Ctrl-C become one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*_COMMANDS, *(name for name in self.commands if name not in _COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:  # added with add_command
            return self.commands[cmd_name]
        if cmd_name not in _COMMANDS:
            return None
        module, attribute = _COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    # click turns Ctrl-C into "Aborted!" and exit 1, the code of a failed check: it is
    # caught here first, wherever it comes (parsing, importing a subcommand, running it).
    def main(self, *args: Any, **kwargs: Any) -> Any:
        previous = signal.signal(signal.SIGINT, _on_ctrl_c)
        try:
            return super().main(*args, **kwargs)
        except KeyboardInterrupt:
            _interrupted()
        except Exception:
            if _ctrl_c_seen:
                _interrupted()
            raise
        finally:
            signal.signal(signal.SIGINT, previous)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            _usage_error(exc)
        except KeyboardInterrupt:
            _interrupted()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _usage_error(exc)
        except EightbitError as exc:
            _fail(str(exc), 2)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # stdout closed early (| head): click ends quietly
                raise
            _fail(_os_message(exc), 2)
        except KeyboardInterrupt:
            _interrupted()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eightbit")
def main() -> None:
    """eightbit: turn trained float networks into exact int8 networks."""
