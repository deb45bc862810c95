"""What every ``embedlab`` command shares: the consoles and tables, the interrupt note, --no-progress, --version, and
``run`` (what ``embedlab.cli.main`` does: logging, error handling, exit statuses).

Exit statuses: 0 done; 2 a user-facing failure (EmbedlabError, or the machine's: a full disk, a read-only file system;
one line on stderr) or a usage error (click's usage message: unknown command or option, missing option, a value that
is not a number or out of range); 130 interrupted (Ctrl-C; one line saying what was kept); 143 terminated (SIGTERM,
handled like Ctrl-C). Anything else is a bug and keeps its traceback. Text from the user (paths, model names, error
messages) is printed literally, never read as Rich markup: a path such as runs/[draft]/model must come out as given.
"""
from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import __version__
from ..errors import EmbedlabError

HELP = "Train, fuse and benchmark text-embedding models (CoDiEmb, CSE-SFP, MTEB-style evaluation)."
console = Console()
# Errors go to stderr like the interrupt line and click's usage errors: stdout may be a CSV or a table being captured
# (`embedlab results --format csv > out.csv` must not put the error into out.csv and show nothing).
err_console = Console(stderr=True)


def _table(title: str, columns: list[str], rows: list[list]) -> Table:
    # Text objects: a plain str title or cell is parsed as Rich markup ("[draft]" vanishes, "[/x]" raises).
    table = Table(title=Text(title))
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[Text(str(x)) for x in r])
    return table


def _say(message: str) -> None:
    """Print a line holding user-supplied text (paths, model names) literally, not as Rich markup."""
    console.print(message, markup=False, highlight=False)


# What the running command keeps when Ctrl-C stops it; run() prints it after the interrupt. Commands set it
# before their work starts, so the line can be specific (a resumable run says so).
_interrupt_note = ""


def _on_interrupt(note: str) -> None:
    global _interrupt_note
    _interrupt_note = note


def _progress_bars(enabled: bool) -> bool:
    """--no-progress: besides passing show_progress down, silence the bars libraries draw on their own (e.g.
    transformers' "Loading weights"), which no embedlab parameter reaches."""
    if not enabled:
        for var in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ[var] = "1"  # read when those libraries are imported (the commands import them lazily)
        if "transformers" in sys.modules:  # already imported (a caller inside Python): switch it off directly
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    return enabled


def _check_out_dir(out: Path, option: str = "--out") -> None:
    """Fail before any work if ``out`` cannot become a folder we write into (otherwise an evaluation would run to
    the end and then fail)."""
    from ..atomic import check_writable_folder

    check_writable_folder(out, option)


def _interrupted() -> None:
    # One line on stderr (stdout may be a CSV or a log being captured), then the shell's status for SIGINT, so that
    # `embedlab train ... && embedlab eval ...` stops here.
    print(_interrupt_note or "interrupted", file=sys.stderr, flush=True)
    sys.exit(143 if _terminated else 130)


# SIGTERM (kill, a batch scheduler, a container stop) is handled like Ctrl-C: the same unwinding (staging folders
# removed, atomic writes abandoned), the same one line, and the shell's status for SIGTERM (143).
_terminated = False


def _on_sigterm(signum, frame) -> None:
    global _terminated
    _terminated = True
    raise KeyboardInterrupt


def _add_usage_context(error: Exception, app: typer.Typer) -> None:
    """Give a usage error raised without a click context (the parser's "Option '--format' requires an argument.")
    the context of the command it came from, so that it shows that command's usage line like every other one."""
    if not hasattr(error, "ctx") or error.ctx is not None:
        return
    try:
        import typer.main

        try:
            from typer._click.utils import _detect_program_name  # "python -m embedlab" or "embedlab", as click says
            prog = _detect_program_name()
        except ImportError:
            prog = "embedlab"
        group = typer.main.get_command(app)
        parent = group.make_context(prog, [], resilient_parsing=True)
        name = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
        command = group.get_command(parent, name) if name else None
        ctx = command.make_context(name, [], parent=parent, resilient_parsing=True) if command else parent
        error.ctx, error.cmd = ctx, ctx.command
    except Exception:  # only a nicer message: never hide the error itself
        return


def run(app: typer.Typer) -> None:
    """Run ``app`` on sys.argv as the ``embedlab`` command: errors as one line, the exit statuses above."""
    import signal
    import threading

    # Installed for this call only: a caller running main() in-process (tests, wrappers) gets its handler back.
    global _terminated
    _terminated = False
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _main(app)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(app: typer.Typer) -> None:
    # typer (>= 0.2x) vendors click: its exceptions live in typer._click / typer.exceptions and are not the `click`
    # package's classes, so both families are caught. Non-standalone mode hands every one of them to us.
    import click
    from typer._click import exceptions as typer_click_exceptions

    usage_errors = (typer_click_exceptions.ClickException, click.ClickException)
    aborts = (typer.Abort, click.exceptions.Abort)
    exits = (typer.Exit, click.exceptions.Exit)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = app(standalone_mode=False)
    except EmbedlabError as e:
        _error_line(str(e))
        sys.exit(2)
    except OSError as e:  # the machine, not embedlab: a full disk, a read-only or unreachable file system, ...
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        _error_line(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else " (while writing the output)"))
        sys.exit(2)
    except usage_errors as e:  # usage errors: click's usage message and exit 2 (other ClickExceptions: their code)
        _add_usage_context(e, app)
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # an interrupt outside typer's own handler (which turns it into status 130)
        _interrupted()
    except aborts as e:  # EOF at a prompt ("Aborted!", 1); click's older releases raised Abort for Ctrl-C too
        if isinstance(e.__context__, KeyboardInterrupt):
            _interrupted()
        if isinstance(e.__context__, EOFError) and e.__context__.__traceback__ is not None and \
                e.__context__.__traceback__.tb_next is not None:
            # click turns *every* EOFError into "Aborted!" (exit 1); embedlab asks nothing at a prompt, so one raised
            # inside a command (e.g. a file cut short) is a bug: keep its traceback instead of a silent abort.
            raise e.__context__
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except exits as e:
        status = e.exit_code
    # In non-standalone mode typer *returns* an exit status instead of exiting: 130 after Ctrl-C (typer turns
    # KeyboardInterrupt into Exit(130)), or the code of an explicit typer.Exit. Commands themselves return None.
    if status == 130:
        _interrupted()
    if isinstance(status, int) and not isinstance(status, bool) and status != 0:
        sys.exit(status)


_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.EMFILE,
                       errno.ENFILE}


def _error_line(message: str) -> None:
    try:
        err_console.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    except OSError:  # stderr itself is gone or full: the exit status still says it failed
        pass


def _print_version(value: bool) -> None:
    if value:
        print(f"embedlab {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the embedlab version and exit"),
) -> None:
    """Train, fuse and benchmark text-embedding models (CoDiEmb, CSE-SFP, MTEB-style evaluation)."""
