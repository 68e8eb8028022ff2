"""The command line's options, declared once per step and added to every command that runs the
step: `download` and `prepare` take the same download options, `extract` and `prepare` the same
extraction options, and so on, so no step's option can be missing from `prepare`. Each group
becomes one typed record (DownloadOptions, ExtractOptions, ...) before the command's body runs;
values a type cannot check (a range, a file, a hash) are checked here, before any work starts.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import typer

from ..core.errors import UserError
from ..root.status import PROBE_LEVELS as CHECKS  # the probe depths, --check


@dataclass
class OptionGroup:
    """Options that together become one record, handed to the command as parameter `into`."""

    into: str
    params: list[tuple[str, Any, Any]]  # (parameter name, annotation, typer.Option)
    build: Callable[..., Any]

    def take(self, values: dict) -> Any:
        """The group's record, built from its options' parsed values (taken out of `values`)."""
        return self.build(**{name: values.pop(name) for name, _, _ in self.params})


def with_options(*groups: OptionGroup):
    """Add the groups' options to a command; it receives each group's record instead."""
    def wrap(fn):
        sig = inspect.signature(fn)
        taken = {g.into for g in groups}
        kept = [p for p in sig.parameters.values() if p.name not in taken]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                 for g in groups for name, kind, option in g.params]

        @functools.wraps(fn)
        def run(*args, **kwargs):
            for g in groups:
                kwargs[g.into] = g.take(kwargs)
            return fn(*args, **kwargs)

        run.__signature__ = sig.replace(parameters=kept + added)
        run.option_groups = groups  # what `cluster sbatch` checks a command's options with
        return run
    return wrap


def check_groups(callback, params: dict) -> None:
    """Build each option group of a command from parsed values, as running it would: what
    `cluster sbatch` does to check a command before a batch job runs it."""
    params = dict(params)
    wrapper = inspect.unwrap(callback, stop=lambda f: hasattr(f, "option_groups"))
    for g in getattr(wrapper, "option_groups", ()):
        g.take(params)


# --- checks a type cannot make ---------------------------------------------------------------

def finite(value):
    """Every float option: a number, not NaN or an infinity."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def positive(value):
    """A float option that must be above zero (seconds, pixels, a learning rate)."""
    finite(value)
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value} is out of range: it must be above 0")
    return value


SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def sha256_hex(value: str | None):
    if value is not None and not SHA256.match(value):
        raise typer.BadParameter(f"{value!r} is not a sha256: it must be 64 hexadecimal digits")
    return value.lower() if value else value


def _existing(value: Path | None, noun: str, is_kind: Callable[[Path], bool]):
    if value is not None and not value.exists():
        raise typer.BadParameter(f"{value}: no such {noun}")
    if value is not None and not is_kind(value):
        raise typer.BadParameter(f"{value}: not a {noun}")
    return value


def existing_file(value: Path | None):
    """An input file the command reads: there, and a file."""
    return _existing(value, "file", Path.is_file)


def existing_dir(value: Path | None):
    """An input folder the command reads: there, and a folder."""
    return _existing(value, "folder", Path.is_dir)


def config_file(value: Path):
    """An MMEngine config: there, and of a kind MMEngine reads."""
    existing_file(value)
    if value.suffix not in (".py", ".yaml", ".yml", ".json"):
        raise typer.BadParameter(f"{value}: not an MMEngine config (.py, .yaml or .json); write "
                                 "one with `datatools mmaction config`")
    return value


def root_path(value: Path):
    """A folder the command writes (--root, --to): it may not exist yet, but is never a file."""
    if value is not None and value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value} is a file, not a directory")
    return value


def root_option(name: str | None = None):
    example = f"data/{name}" if name else "data/<dataset>"
    return typer.Option(..., callback=root_path, metavar="DIR", help=f"Data root, e.g. {example}")


# --- download --------------------------------------------------------------------------------

# The HTTP client's options, shared by `fetch` and every command that downloads.
TIMEOUT = typer.Option(30.0, callback=positive, metavar="SECONDS",
                       help="Seconds without data before a try fails (above 0)")
RETRIES = typer.Option(5, min=0, metavar="N", help="Further tries after failed ones in a row "
                       "(connection errors, timeouts, 408, 429, 5xx); reset when a try gets further")


def _download(what, mirror, from_dir, jobs, keep_archives, checksums, timeout, retries):
    from ..acquire.http import HttpOptions
    from ..acquire.session import DownloadOptions, read_checksums
    return DownloadOptions(what=what, mirror=mirror, from_dir=from_dir, jobs=jobs,
                           keep_archives=keep_archives,
                           checksums=read_checksums(checksums) if checksums else {},
                           http=HttpOptions(timeout=timeout, retries=retries))


DOWNLOAD = OptionGroup("download", [
    ("what", str, typer.Option("all", metavar="annotations|videos|all", help="What to download")),
    ("mirror", Optional[str], typer.Option(None, envvar="DATATOOLS_MIRROR", metavar="URL",
                                           help="Base URL replacing the catalog's (a mirror or cache)")),
    ("from_dir", Optional[Path], typer.Option(None, callback=existing_dir, metavar="DIR",
                                              help="Use archives fetched by hand from DIR (no network)")),
    ("jobs", int, typer.Option(4, min=1, metavar="N", help="Files fetched in parallel")),
    ("keep_archives", bool, typer.Option(False, help="Keep archives after unpacking them")),
    ("checksums", Optional[Path], typer.Option(None, callback=existing_file, metavar="FILE",
                                               help="sha256sum-style file of expected hashes")),
    ("timeout", float, TIMEOUT),
    ("retries", int, RETRIES),
], _download)


# --- validate --------------------------------------------------------------------------------

def _validate(check, quarantine):
    from ..validate.run import ValidateOptions
    return ValidateOptions(check, quarantine)


VALIDATE = OptionGroup("validating", [
    ("check", str, typer.Option("quick", metavar="quick|full",
                                help="Probe depth: quick (container + a few frames) or full (every frame)")),
    ("quarantine", bool, typer.Option(False, "--quarantine", help="Move bad files to ROOT/quarantine/")),
], _validate)


def deprecated_level(level: str | None, validating):
    """`--level quick|full`, the probe depth's old name (kept for one release)."""
    if level is None:
        return validating
    if level not in CHECKS:
        raise UserError(f"--level {level!r}: the probe depth is now --check quick|full")
    typer.echo(f"warning: --level {level} is deprecated for the probe depth; use --check {level}",
               err=True)
    return replace(validating, check=level)


# --- lists -----------------------------------------------------------------------------------

def _lists(level, shuffle, seed):
    from ..lists.build import ListOptions
    if level in ("1", "2"):
        return ListOptions(int(level), shuffle, seed)
    if level in CHECKS:
        return ListOptions(2, shuffle, seed, probe_level=level)
    raise UserError(f"--level {level!r}: must be 1 (flat) or 2 (class folders), the folder "
                    "depth of list entries")


LISTS = OptionGroup("listing", [
    ("level", str, typer.Option("2", metavar="1|2", help="List entries: 2: Class/name; 1: flat")),
    ("shuffle", bool, typer.Option(False, help="Shuffle lines as MMAction2 does")),
    ("seed", Optional[int], typer.Option(None, metavar="N",
                                         help="Seed for --shuffle (MMAction2-compatible)")),
], _lists)


# --- extract ---------------------------------------------------------------------------------

def _extract(task, algo, backend, denseflow_bin, new_short, new_size, bound, naming,
             jpeg_quality, store, split, subset, limit):
    from ..extract.options import ExtractOptions, parse_size
    from ..extract.run import Selection
    opts = ExtractOptions(task=task, algo=algo, backend=backend, new_short=new_short,
                          new_size=parse_size(new_size), bound=bound, naming=naming,
                          jpeg_quality=jpeg_quality, denseflow_bin=denseflow_bin, store=store)
    return opts, Selection(split, subset, limit)


EXTRACT = OptionGroup("extracting", [
    ("task", str, typer.Option("both", metavar="rgb|flow|both", help="What to extract")),
    ("algo", str, typer.Option("tvl1", metavar="tvl1|farneback", help="Optical flow algorithm")),
    ("backend", str, typer.Option("auto", metavar="NAME", help="Flow backend: auto (opencv), "
                                  "opencv, torch (TV-L1 batched on CUDA, or CPU), native (our C++ "
                                  "datatools-flow, or the one $DATATOOLS_FLOW names) or "
                                  "denseflow (--denseflow-bin)")),
    ("denseflow_bin", Optional[str], typer.Option(None, metavar="FILE",
                                                  help="A denseflow-compatible executable")),
    ("new_short", Optional[int], typer.Option(None, min=2, metavar="N",
                                              help="Scale the short side to N (never upscales)")),
    ("new_size", Optional[str], typer.Option(None, metavar="WxH", help="Exact output size WIDTHxHEIGHT")),
    ("bound", float, typer.Option(20.0, callback=positive, metavar="PIXELS",
                                  help="Flow clip bound in pixels (quantization range)")),
    ("naming", str, typer.Option("mmaction", metavar="mmaction|denseflow",
                                 help="mmaction: 1-based names; denseflow: 0-based")),
    ("jpeg_quality", int, typer.Option(95, min=1, max=100, metavar="Q",
                                       help="JPEG quality of RGB and flow images")),
    ("store", str, typer.Option("files", metavar="files|packed",
                                help="files: a folder of JPEGs per video; packed: one stored zip per "
                                     "video (rawframes/<Class>/<name>.zip), read by MMAction2 "
                                     "through io_backend='datatools_packed'")),
    ("split", int, typer.Option(1, min=1, metavar="N", help="Which split's membership selects videos")),
    ("subset", Optional[str], typer.Option(None, metavar="NAME",
                                           help="Only this subset of the split: train, val or test "
                                                "(the dataset's names; default: all)")),
    ("limit", Optional[int], typer.Option(None, min=1, metavar="N", help="Only the first N selected videos")),
], _extract)
