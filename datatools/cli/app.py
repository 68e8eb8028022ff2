"""The `datatools` command line: wires commands to library functions, no logic of its own.

Every command ends the same way (`command`): success, or one line saying what to change and an
exit code of one meaning (errors.EXIT_*); a bug is one line naming the log with its traceback.
Long commands keep a log per run (runlog.py) and name it in their last line.
"""

from __future__ import annotations

import functools
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from .. import __version__, datasets
from ..core import interruption
from ..core.errors import (
    EXIT_BUSY,
    EXIT_DISK,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_PROBLEMS,
    EXIT_TERMINATED,
    EXIT_USAGE,
    InternalError,
    NothingToDo,
    ProblemsFound,
    UserError,
    one_line,
    one_of,
    shell_word,
)
from .options import (
    DOWNLOAD,
    EXTRACT,
    LISTS,
    RETRIES,
    TIMEOUT,
    VALIDATE,
    OptionGroup,
    check_groups,
    config_file,
    deprecated_level,
    existing_file,
    positive,
    root_option,
    root_path,
    sha256_hex,
    with_options,
)

ENVIRONMENT = (
    "Environment variables: DATATOOLS_MIRROR (download: a base URL replacing the catalog's), "
    "DATATOOLS_FLOW (the native extractor's executable), DATATOOLS_LOCK=off (run without the "
    "root's lock, where the filesystem cannot lock), DATATOOLS_PROGRESS_SECONDS (seconds between "
    "progress lines when output is not a terminal; default 30), XDG_STATE_HOME (logs of commands "
    "without a usable root go to $XDG_STATE_HOME/datatools/logs), DASK_CONFIG (Dask's config "
    "folder: jobqueue.slurm.* cluster settings).\n\n"
    "Exit codes: 0 done; 1 done, with problems in the data (failed videos or downloads; missing "
    "or bad videos with --strict); 2 bad options or input; 3 internal error (a bug: please "
    "report it with the log); 4 disk full, over quota or read-only; 75 another command holds "
    "the root's lock; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): re-run the same "
    "command to resume.")

app = typer.Typer(help="Turn raw video action-recognition datasets into data MMAction2 trains on.",
                  epilog=ENVIRONMENT, no_args_is_help=True, add_completion=False)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"datatools {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version,
                                          is_eager=True, help="Print the version and exit")):
    """Turn raw video action-recognition datasets into data MMAction2 trains on."""


# The signal that stopped this process, if one did (SIGTERM's exit code differs from Ctrl-C's).
_stopped_by: int | None = None


def _error_code(exc: BaseException, root: Path | None = None) -> tuple[str, int]:
    """The line and exit code (errors.EXIT_*) of an error a user can act on (a full disk
    where the error names no file: the root's)."""
    from ..core.fsio import DiskError, disk_error, is_disk_error
    from ..root.lock import RootBusy
    if is_disk_error(exc):
        exc = disk_error(exc, Path(getattr(exc, "filename", None) or root or "."))
    elif isinstance(exc, OSError):  # the system refused something: say what, on which file
        exc = UserError(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    line = one_line(str(exc))
    if isinstance(exc, RootBusy):
        return line, EXIT_BUSY
    if isinstance(exc, DiskError):
        return line, EXIT_DISK
    if isinstance(exc, InternalError):
        return line, EXIT_INTERNAL
    if isinstance(exc, ProblemsFound):
        return line, EXIT_PROBLEMS
    return line, EXIT_USAGE


def _bug(exc: BaseException, name: str, root: Path | None) -> str:
    """An exception no rule expected: the traceback to the log, one line to the user."""
    from ..core.runlog import exception_text, log_for
    log = log_for(root, name)
    log.error(f"internal error in datatools {name}", exception_text(exc))
    return (f"internal error in datatools {name} ({type(exc).__name__}: {one_line(str(exc))}); "
            f"this is a bug, please report it with the log {log.path}")


def _interrupted() -> tuple[str, int]:
    from ..core.console import running
    code = EXIT_TERMINATED if _stopped_by == signal.SIGTERM else EXIT_INTERRUPTED
    word = "terminated" if code == EXIT_TERMINATED else "interrupted"
    if running is not None:
        return (f"{word}: {running.done:,} of {running.total:,} {running.what} done in "
                f"{running.step}; run the same command again to resume"), code
    return f"{word}: what finished is kept; run the same command again to resume", code


def _command_name(fn) -> str:
    """The log's name: the command's (`build-lists`, `mmaction-train`)."""
    return fn.__name__.removesuffix("_cmd").replace("_", "-")


def command(fn=None, *, log: bool = True):
    """Every command's errors end the same way: one line and an exit code (errors.EXIT_*).
    With `log`, the command keeps a log per run (under its --root when it has one) and its
    last line names it; Ctrl-C and SIGTERM say how far it got and how to resume."""
    if fn is None:
        return functools.partial(command, log=log)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        from contextlib import nullcontext

        from ..core.runlog import run_log
        name = _command_name(fn)
        root = kwargs.get("root")
        keeping = run_log(name, root, ["datatools", *sys.argv[1:]]) if log else nullcontext()
        code = 0
        with keeping as this_run:
            try:
                fn(*args, **kwargs)
            except NothingToDo as exc:
                typer.echo(str(exc))
                return
            except typer.Exit as exc:
                code = exc.exit_code
            except (UserError, InternalError, OSError) as exc:
                line, code = _error_code(exc, root)
                typer.echo(f"error: {line}", err=True)
            except KeyboardInterrupt:
                line, code = _interrupted()
                typer.echo(line, err=True)
            except Exception as exc:  # a bug: one line, the traceback in the log
                typer.echo(f"error: {_bug(exc, name, root)}", err=True)
                code = EXIT_INTERNAL
            # Every run that did work keeps its log; one refused for its options only if it
            # had begun one.
            if this_run is not None and (code != EXIT_USAGE or this_run.started):
                this_run.start()
                typer.echo(f"log: {this_run.path}", err=code != 0)
        if code:
            raise typer.Exit(code)
    return run


# Set by main(): this process was started as the `datatools` command, not called from another
# program (the tests' CliRunner, a notebook) that may have run native thread pools already.
_console_process = False

WORKERS = typer.Option(None, min=1, metavar="N", help="Local Dask workers (default: one per core)")


def cluster_options(workers=None, scheduler=None, cluster_kind="local", slurm=None,
                    cluster_config=None, gpus=None):
    from ..schedule.client import ClusterOptions
    from ..schedule.resources import visible_gpus
    from ..schedule.slurm import parse_slurm_options
    devices = []
    if gpus:
        present = visible_gpus()
        devices = present if gpus == "all" else [d.strip() for d in gpus.split(",") if d.strip()]
        unknown = [d for d in devices if d not in present]
        if not devices or unknown:
            what = f"no GPU {', '.join(unknown)}" if present else "no GPU on this machine"
            raise UserError(f"--gpus {gpus}: {what} (`nvidia-smi -L` lists "
                            f"{', '.join(present) or 'none'}); leave --gpus out, or name listed ids")
    # fork (schedule/client.py, LOCAL_START): these commands run no native thread pool before
    # their cluster starts, but only the console command's own process is known to be fresh
    return ClusterOptions(workers=workers, scheduler=scheduler, kind=cluster_kind,
                          slurm=parse_slurm_options(slurm or []), config_file=cluster_config,
                          gpus=devices, fork=_console_process)


# Where the work runs: added to every command that schedules work, handed to it as one
# ClusterOptions (schedule/client.py) in its `cluster` parameter.
CLUSTER = OptionGroup("cluster", [
    ("workers", Optional[int], WORKERS),
    ("scheduler", Optional[str], typer.Option(None, metavar="tcp://HOST:PORT",
                                              help="Use a running Dask cluster (its scheduler's address)")),
    ("cluster_kind", str, typer.Option("local", "--cluster", metavar="local|slurm",
                                       help="local, or slurm (workers as SLURM jobs)")),
    ("slurm", Optional[list[str]], typer.Option(
        None, "--slurm", metavar="KEY=VALUE", help="SLURM setting (repeatable): partition, account, "
        "cores, processes, memory, walltime, jobs, max_jobs, gpus_per_job, extra (an #SBATCH "
        "line), lifetime, stagger")),
    ("cluster_config", Optional[Path], typer.Option(
        None, callback=existing_file, metavar="FILE",
        help="Dask config YAML with the cluster settings (jobqueue.slurm.*), written once per lab")),
    ("gpus", Optional[str], typer.Option(None, metavar="IDS|all",
                                         help="Local GPU workers: device ids (0,1) or 'all'")),
], cluster_options)

STRICT = typer.Option(False, help="Exit 1 when a video or frame folder the annotations name is "
                      "missing or bad (default: counted in the summary, exit 0)")


def _dataset_app(name: str) -> typer.Typer:
    sub = typer.Typer(help=f"Steps for {datasets.get(name).catalog.title}.", no_args_is_help=True)

    @sub.command("build-lists")
    @command
    @with_options(LISTS)
    def build_lists_cmd(
        root: Path = root_option(name),
        format: str = typer.Option("videos", "--format", metavar="videos,rawframes,flow",
                                   help="Which lists (comma-separated)"),
        strict: bool = STRICT,
        listing=None,
    ):
        """Join annotations with the disk, update manifest.parquet and write MMAction2 lists."""
        from ..lists.build import parse_formats
        from ..pipeline import steps
        if listing.probe_level is not None:
            raise UserError(f"--level {listing.probe_level}: build-lists' --level is the folder "
                            "depth of list entries, 1 or 2")
        steps.build_lists(name, root, parse_formats(format), listing).exit_code(strict)

    @sub.command("download")
    @command
    @with_options(DOWNLOAD)
    def download_cmd(root: Path = root_option(name), download=None):
        """Download (or take from --from-dir), verify and unpack into the root's layout."""
        from ..pipeline import steps
        raise typer.Exit(steps.download(name, root, download).exit_code())

    @sub.command("prepare")
    @command
    @with_options(DOWNLOAD, VALIDATE, LISTS, EXTRACT, CLUSTER)
    def prepare_cmd(
        root: Path = root_option(name),
        steps: str = typer.Option("download,validate,lists,extract,frame-lists",
                                  metavar="STEP,STEP", help="Which steps, comma-separated "
                                  "(always run in this order)"),
        strict: bool = STRICT,
        force: bool = typer.Option(False, help="validate: probe every video again; extract: "
                                   "redo videos extracted with other parameters"),
        download=None, validating=None, listing=None, extracting=None, cluster=None,
    ):
        """Run the whole pipeline (download → validate → lists → extract → frame lists);
        re-run the same command to resume after an interruption."""
        from ..pipeline.prepare import PrepareOptions, parse_steps, prepare
        if listing.probe_level is not None:  # the probe depth's old name in prepare
            validating = deprecated_level(listing.probe_level, validating)
        opts = PrepareOptions(steps=parse_steps(steps), download=download, validating=validating,
                              listing=listing, extract=extracting[0], selection=extracting[1],
                              cluster=cluster, strict=strict, force=force)
        if not prepare(name, root, opts):
            raise typer.Exit(EXIT_PROBLEMS)

    @sub.command("validate")
    @command
    @with_options(VALIDATE, CLUSTER)
    def validate_cmd(
        root: Path = root_option(name),
        restore: bool = typer.Option(False, "--restore", help="Put quarantined files back, then stop"),
        strict: bool = typer.Option(False, help="Exit 1 if any video is not ok"),
        force: bool = typer.Option(False, help="Probe every video again, also unchanged ones"),
        level: Optional[str] = typer.Option(None, hidden=True, help="Deprecated: --check"),
        validating=None, cluster=None,
    ):
        """Probe every video in parallel; record status and metadata in the manifest."""
        from ..core.console import plain
        from ..pipeline import steps
        from ..validate.run import restore as restore_files
        validating = deprecated_level(level, validating)
        if restore:
            restored, problems = restore_files(name, root)
            plain(f"{len(restored)} file(s) restored from quarantine")
            for p in problems:
                typer.echo(f"error: {p}", err=True)
            raise typer.Exit(EXIT_PROBLEMS if problems else 0)
        steps.validate(name, root, validating.check, cluster, validating.quarantine,
                       force).exit_code(strict)

    return sub


for _name in datasets.names():
    app.add_typer(_dataset_app(_name), name=_name)


@app.command("datasets")
@command(log=False)
def list_datasets(names_only: bool = typer.Option(False, "--names", help="Only the names, one per line")):
    """The datasets this installation knows: datatools' own and those of installed plugins
    (entry-point group `datatools.datasets`)."""
    from ..pipeline.summaries import print_datasets
    registry = datasets.registry()
    if names_only:
        typer.echo("\n".join(registry))
        return
    print_datasets([(name, cls().catalog.title, cls.__module__) for name, cls in registry.items()])


cluster_app = typer.Typer(help="Run datatools on a SLURM cluster.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("sbatch", context_settings={"allow_extra_args": True,
                                                 "ignore_unknown_options": True})
@command(log=False)
def cluster_sbatch(
    ctx: typer.Context,
    out: Path = typer.Option(..., metavar="FILE", help="Batch script to write"),
    job_name: str = typer.Option("datatools", metavar="NAME", help="SLURM job name of the driver"),
    partition: Optional[str] = typer.Option(None, metavar="NAME", help="Partition of the driver job"),
    account: Optional[str] = typer.Option(None, metavar="NAME", help="Account to charge"),
    time: str = typer.Option("24:00:00", metavar="HH:MM:SS", help="Walltime of the driver job"),
    cpus: int = typer.Option(1, min=1, metavar="N", help="CPUs of the driver job"),
    mem: str = typer.Option("4G", metavar="SIZE", help="Memory of the driver job"),
    extra: Optional[list[str]] = typer.Option(None, metavar="LINE", help="More #SBATCH lines (repeatable)"),
):
    """Write a batch script running a datatools command as the driver job:
    `datatools cluster sbatch --out job.sh -- DATASET prepare --root data/DATASET --cluster slurm`,
    then `sbatch job.sh`."""
    from ..core.fsio import atomic_write
    from ..schedule.sbatch import batch_script
    args = list(ctx.args)
    check_datatools_command(args)
    atomic_write(out, batch_script(args, job_name, partition, account, time, cpus, mem, extra or []))
    out.chmod(0o755)
    typer.echo(f"wrote {out}; submit with: sbatch {shell_word(out)}")


def check_datatools_command(args: list[str]) -> None:
    """What `cluster sbatch` will run must be a datatools command whose options parse."""
    if not args:
        raise UserError("cluster sbatch: no command to run; write it after `--`, e.g. "
                        "`-- DATASET prepare --root data/DATASET`")
    if args[0] == "datatools":
        raise UserError("cluster sbatch: write the command without `datatools` "
                        f"(`-- {shlex.join(args[1:])}`)")
    cmd = typer.main.get_command(app)
    ctx = typer.Context(cmd, info_name="datatools")
    rest = list(args)
    command = "datatools " + shlex.join(args)
    while isinstance(cmd, TyperGroup):
        if not rest or rest[0].startswith("-"):
            raise UserError(f"cluster sbatch: `{command}` names no command after "
                            f"`{ctx.command_path}`; see `{ctx.command_path} --help`")
        name, rest = rest[0], rest[1:]
        sub = cmd.get_command(ctx, name)
        if sub is None:
            raise UserError(f"cluster sbatch: `{command}`: `{ctx.command_path}` has no command "
                            f"{name!r}; see `{ctx.command_path} --help`")
        cmd, ctx = sub, typer.Context(sub, info_name=name, parent=ctx)
    if "--help" in rest:
        raise UserError(f"cluster sbatch: `{command}` asks for help, not work; write the "
                        "command the job should run")
    try:
        with cmd.make_context(ctx.info_name, rest, parent=ctx.parent) as parsed:
            # Parsing checks types, ranges and required options; the groups' records the rest
            # (a --check, a --scheduler address, a --steps list is the command's own).
            check_groups(cmd.callback, parsed.params)
            if "steps" in parsed.params:
                from ..pipeline.prepare import parse_steps
                parse_steps(parsed.params["steps"])
    except typer.TyperException as exc:
        raise UserError(f"cluster sbatch: `{command}` would not run: "
                        f"{exc.format_message()}") from None
    except UserError as exc:
        raise UserError(f"cluster sbatch: `{command}` would not run: {exc}") from None


mmaction_app = typer.Typer(help="Train with MMAction2 from a manifest.", no_args_is_help=True)
app.add_typer(mmaction_app, name="mmaction")


@mmaction_app.command("config")
@command(log=False)
def mmaction_config(
    root: Path = typer.Option(..., callback=root_path, metavar="DIR", help="Data root with a manifest"),
    out: Path = typer.Option(..., metavar="FILE", help="Config file to write (.py)"),
    model: str = typer.Option("tsn", metavar="tsn|tsm|i3d|slowonly", help="datatools' short "
                              "config for one of four models (their zoo configs: --from NAME)"),
    modality: str = typer.Option("rgb", metavar="rgb|flow", help="rgb or flow (flow: tsn)"),
    input: Optional[str] = typer.Option(None, "--input", metavar="videos|rawframes",
                                        help="RGB from videos or rawframes (default videos; "
                                             "--from: as the source, unless the root holds only "
                                             "the other)"),
    split: int = typer.Option(1, min=1, max=3, metavar="N", help="Which split's train/val subsets to use"),
    depth: int = typer.Option(50, min=18, max=101, metavar="18|34|50|101", help="ResNet depth"),
    pretrained: bool = typer.Option(True, help="ImageNet-initialised backbone (needs the download)"),
    crop: Optional[int] = typer.Option(None, min=16, metavar="PIXELS", help="Input size (square "
                                       "crop; default 224; --from: the source's, other sizes "
                                       "scaled with it)"),
    clips: Optional[int] = typer.Option(None, min=1, metavar="N",
                                        help="Clips (segments) per video; default: the model's"),
    epochs: Optional[int] = typer.Option(None, min=1, metavar="N",
                                         help="Training epochs (default 50; --from: the source's)"),
    batch_size: Optional[int] = typer.Option(None, min=1, metavar="N",
                                             help="Videos per batch (default 8; --from: the source's)"),
    workers: Optional[int] = typer.Option(None, min=0, metavar="N", help="Dataloader worker "
                                          "processes (default 2; --from: the source's)"),
    lr: Optional[float] = typer.Option(None, callback=positive, metavar="RATE",
                                       help="Learning rate (default 0.01, SGD; --from: the source's)"),
    source: Optional[str] = typer.Option(
        None, "--from", metavar="NAME|CONFIG.py",
        help="Adapt any recognition config: a zoo model's name or alias (`datatools mmaction "
             "models`), or a config file; keeps its model, optimiser and schedule"),
    finetune: bool = typer.Option(False, help="With --from: start from the model's published "
                                  "checkpoint, a new head, half the lr and half "
                                  "the epochs (MMAction2's fine-tuning guide)"),
    flip: bool = typer.Option(True, help="Random horizontal flips in training; --no-flip for "
                              "classes told apart by direction (left vs right)"),
    seed: Optional[int] = typer.Option(None, min=0, metavar="N",
                                       help="Random seed, for a run that can be repeated"),
):
    """Write an MMAction2 config whose datasets read the manifest (no hand-edited paths)."""
    if source is not None:
        from ..mmaction.adapt import AdaptOptions, adapt
        if input is not None:
            from ..mmaction.config import INPUTS
            one_of("--input", input, INPUTS)
        text, what = adapt(source, root, AdaptOptions(split, finetune, epochs, batch_size, lr,
                                                      workers, crop, flip, seed, input))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}: {what}; train with: datatools mmaction train {shell_word(out)} "
                   "(or MMAction2's tools/train.py)")
        return
    if finetune:
        raise UserError("--finetune adapts a zoo model: use it with --from NAME")
    from ..mmaction.config import ConfigOptions, write_config
    given = dict(input=input, crop=crop, epochs=epochs, batch_size=batch_size, workers=workers,
                 lr=lr)
    path = write_config(root, ConfigOptions(  # what is not given: ConfigOptions' defaults
        model, modality, split=split, depth=depth, pretrained=pretrained, num_clips=clips,
        flip=flip, seed=seed, **{k: v for k, v in given.items() if v is not None}), out)
    typer.echo(f"wrote {path}; train with: datatools mmaction train {shell_word(path)} "
               "(or MMAction2's tools/train.py)")


@mmaction_app.command("models")
@command(log=False)
def mmaction_models(
    root: Optional[Path] = typer.Option(None, callback=root_path, metavar="DIR",
                                        help="Also say whether this root can feed each model now"),
):
    """The recognition models of MMAction2's zoo (its wheel's metafiles): family, input, clip,
    top-1 as published."""
    from ..mmaction.zoo import can_feed, models, root_has
    from ..pipeline.summaries import print_models
    has = root_has(root) if root is not None else None
    print_models([(m.name, m.family, m.input or f"({m.dataset_type or '-'})", m.clip or "-",
                   f"{m.top1:.2f}" if m.top1 is not None else "-",
                   *((can_feed(m, has),) if has is not None else ())) for m in models()],
                 feeds=has is not None)


@mmaction_app.command("train")
@command
def mmaction_train(
    config: Path = typer.Argument(..., callback=config_file, metavar="CONFIG.py",
                                  help="A config from `datatools mmaction config`"),
    work_dir: Path = typer.Option(Path("work_dirs/datatools"), metavar="DIR", help="Logs and checkpoints"),
):
    """Train a config with MMEngine's Runner, then test it on the val subset (top-1)."""
    from ..mmaction.train import train_and_test
    metrics = train_and_test(config, work_dir)
    typer.echo("test: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


@app.command()
@command
def fetch(
    urls: list[str] = typer.Argument(..., metavar="URL...", help="One or more http(s) URLs"),
    to: Path = typer.Option(Path("."), callback=root_path, metavar="DIR",
                            help="Folder the files go to"),
    jobs: int = typer.Option(4, min=1, metavar="N", help="Files fetched in parallel"),
    sha256: Optional[str] = typer.Option(None, callback=sha256_hex, metavar="HEX",
                                         help="Expected sha256, 64 hex digits (with a single URL)"),
    timeout: float = TIMEOUT,
    retries: int = RETRIES,
):
    """Download files with resume, retries and sha256 (what `download` uses, for any URL)."""
    from ..acquire.http import HttpOptions, fetch_urls
    from ..core.console import DownloadProgress, report_failure
    if sha256 and len(urls) > 1:
        raise UserError("--sha256 checks a single file; pass one URL")
    with DownloadProgress() as ui:
        fetched, failures = fetch_urls(urls, to, jobs, HttpOptions(timeout, retries), sha256, ui)
    for f in sorted(fetched, key=lambda f: f.path.name):  # sha256sum's format, never wrapped
        typer.echo(f"{f.sha256}  {f.path}")
    for failure in failures:
        report_failure(f"error: {failure}", stderr=True)
    if failures:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command()
@command
@with_options(EXTRACT, CLUSTER)
def extract(
    root: Path = typer.Option(..., callback=root_path, metavar="DIR",
                              help="Data root with a manifest (run build-lists first)"),
    force: bool = typer.Option(False, help="Redo videos extracted with other parameters"),
    extracting=None, cluster=None,
):
    """Extract RGB frames and optical flow for the videos in the manifest."""
    from ..pipeline import steps
    opts, selection = extracting
    raise typer.Exit(steps.extract(root, opts, selection, cluster, force).exit_code())


FRAMES_DIR = typer.Option("rawframes", "--frames-dir", metavar="NAME",
                          help="The frames folder under the root")
THREADS = typer.Option(None, "--threads", min=1, metavar="N",
                       help="Folders converted at once (default: one per core)")


@app.command()
@command
def pack(root: Path = typer.Option(..., callback=root_path, metavar="DIR", help="Data root"),
         frames_dir: str = FRAMES_DIR, threads: Optional[int] = THREADS,
         to: str = typer.Option("zip", "--to", metavar="zip|lmdb",
                                help="zip: one stored zip per video, replacing its folder; lmdb: "
                                     "every frame in ROOT/rawframes.lmdb for MMAction2's stock "
                                     "lmdb backend (the frames stay)")):
    """Turn frame folders (ours, MMAction2's, denseflow's) into one stored zip per video, or
    export every frame to one LMDB."""
    from ..frames.convert import frames_top, pack_all, walk_frames
    from ..root.lock import root_lock
    one_of("--to", to, ("zip", "lmdb"))
    with root_lock(root, f"pack --to {to}"):
        if to == "lmdb":
            _export_lmdb(root, frames_dir)
            return
        tree = walk_frames(frames_top(root, frames_dir))
        _convert_root(root, "pack", pack_all, tree.folders, tree.passed, threads, "folders")


def _export_lmdb(root: Path, frames_dir: str) -> None:
    from ..core.console import plain, progress_bar, report_failure
    from ..frames.lmdb import export_lmdb
    with progress_bar(0, "pack --to lmdb", "frames") as advance:
        export = export_lmdb(root, frames_dir, advance)
    for path, why in export.failed:
        report_failure(_failure_line("pack --to lmdb", path, why))
    plain(f"pack: {export.frames} frames in {export.path}"
          + (f", {len(export.failed)} folder(s) or pack(s) left out (above)" if export.failed else "")
          + f"; read them with RawFrameDecode(io_backend='lmdb', db_path='{export.path}') and the "
          "dataset's data_prefix=dict(img='')")
    if export.failed:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command()
@command
def unpack(root: Path = typer.Option(..., callback=root_path, metavar="DIR", help="Data root"),
           frames_dir: str = FRAMES_DIR, threads: Optional[int] = THREADS):
    """Turn packs back into frame folders, byte for byte."""
    from ..frames.convert import frames_top, unpack_all, walk_frames
    from ..root.lock import root_lock
    with root_lock(root, "unpack"):
        tree = walk_frames(frames_top(root, frames_dir))
        _convert_root(root, "unpack", unpack_all, tree.packs, tree.passed, threads, "packs")


def _convert_root(root: Path, step: str, convert, items: list, passed: list, threads,
                  what: str) -> None:
    from ..core.console import plain, progress_bar, report_failure
    from ..root.manifest import ManifestUnreadable, set_frame_storage
    with progress_bar(len(items), step, what) as advance:
        result = convert(items, threads, advance)
    from ..frames.packs import SUFFIX
    failed = passed + result.failed
    for path, why in failed:
        report_failure(_failure_line(step, path, why))
    # The manifest says where each video's frames are now (build-lists would find it too).
    storage = "packed" if step == "pack" else "files"
    converted = [p if step == "pack" else p[: -len(SUFFIX)] for p in result.converted + result.already]
    try:
        rows = set_frame_storage(root, {os.path.relpath(p, root): storage for p in converted})
    except ManifestUnreadable as exc:
        report_failure(f"{step}: {exc}")
        rows = 0
    plain(f"{step}: {len(result.converted)} {what} converted, {len(result.already)} finished from "
          f"an interrupted run, {len(failed)} failed"
          + (f"; the manifest says so for {rows} video(s)" if rows else ""))
    if failed:
        raise typer.Exit(EXIT_PROBLEMS)


def _failure_line(step: str, path: str, why: str) -> str:
    """One item's failure: its reason, with the path in front where the reason lacks it."""
    return f"{step}: {why}" if why.startswith(path) else f"{step}: {path}: {why}"


@app.command()
@command(log=False)
def doctor():
    """Report what is installed, what is missing, and how to fix it."""
    from .doctor import run_doctor
    raise typer.Exit(run_doctor())


@app.command()
@command
def demo(root: Path = typer.Option(Path("demo_data"), callback=root_path, metavar="DIR",
                                   help="Where to generate the demo dataset"),
         videos_per_class: int = typer.Option(3, min=1, metavar="N", help="Videos per class (4 classes)"),
         workers: Optional[int] = WORKERS):
    """Generate a small dataset (real motion, a real dataset's layout) and run every step on it."""
    from ..pipeline.demo import run_demo
    run_demo(root, videos_per_class, workers)


def _terminate(signum, frame):
    global _stopped_by
    _stopped_by = signum
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
    interruption.stop()


def _tidy_help(cmd):
    """Help as Unix tools write it: a flag shows no type (Typer writes `<bool>`), an argument
    shows its metavar once (Typer writes `{URL...}...` in the usage and the type again)."""
    for param in cmd.params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument) and param.metavar:
            shown = param.metavar
            param.get_usage_pieces = lambda ctx, shown=shown: [shown]
            param.display_type_rich = lambda ctx: None
    help_option = cmd.get_help_option

    def plain_help_option(ctx):
        option = help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option
    cmd.get_help_option = plain_help_option
    for sub in getattr(cmd, "commands", {}).values():
        _tidy_help(sub)
    return cmd


def _usage_line(exc) -> str:
    """Click's usage error (several lines and a box) as one line naming the command."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "datatools"
    return f"error: {where}: {one_line(exc.format_message())} (see `{where} --help`)"


def main() -> None:
    """The `datatools` console command. Once a command has finished and its output is
    flushed, the process leaves through os._exit: the interpreter's teardown (finalizing
    numpy, pyarrow, Dask and their threads) took 0.15 s of every command and serves nothing a
    finished command needs; its files are closed and its clusters shut down by then (context
    managers). Errors in the options are one line and exit 2, as every command's own errors."""
    global _console_process
    _console_process = True
    # Paths from disk may hold bytes that are not UTF-8 (surrogates in Python's str): printed
    # escaped, never an error while saying what went wrong.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    from ..root.lock import set_command
    set_command(" ".join(["datatools", *sys.argv[1:]]))
    # SIGTERM (a batch scheduler's stop, `kill`) ends a command as Ctrl-C does: what finished
    # is saved, and the line says how to resume.
    signal.signal(signal.SIGTERM, _terminate)
    interruption.handle_ctrl_c()
    try:
        code = _tidy_help(typer.main.get_command(app)).main(sys.argv[1:], prog_name="datatools",
                                                            standalone_mode=False)
    except typer.TyperException as exc:  # Click's usage errors
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            typer.echo(exc.ctx.get_help())  # `datatools ucf101`: the help it asks for
        else:
            typer.echo(_usage_line(exc), err=True)
        code = EXIT_USAGE
    except typer.Abort:
        code = EXIT_TERMINATED if _stopped_by == signal.SIGTERM else EXIT_INTERRUPTED
    except KeyboardInterrupt:  # while the options were parsed
        code = EXIT_TERMINATED if _stopped_by == signal.SIGTERM else EXIT_INTERRUPTED
    if not isinstance(code, int):
        code = 0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)
