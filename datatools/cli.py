"""The `datatools` command line: wires commands to library functions, no logic of its own."""

from __future__ import annotations

import functools
import inspect
import math
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__, datasets
from .errors import (
    EXIT_BUSY,
    EXIT_DISK,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    UserError,
)

app = typer.Typer(help="Turn raw video action-recognition datasets into data MMAction2 trains on.",
                  no_args_is_help=True, add_completion=False)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"datatools {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version,
                                          is_eager=True, help="Print the version and exit")):
    """Turn raw video action-recognition datasets into data MMAction2 trains on."""


def _report(exc: BaseException) -> int:
    """One line for an error that ends a command, and its exit code (errors.EXIT_*)."""
    from .failures import InternalError
    from .fsio import DiskError, disk_error, is_disk_error
    from .lock import RootBusy
    if is_disk_error(exc):
        exc = disk_error(exc, Path(getattr(exc, "filename", None) or "."))
    elif isinstance(exc, OSError):  # the system refused something: say what, on which file
        exc = UserError(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    typer.echo(f"error: {exc}", err=True)
    if isinstance(exc, RootBusy):
        return EXIT_BUSY
    if isinstance(exc, DiskError):
        return EXIT_DISK
    if isinstance(exc, InternalError):
        return EXIT_INTERNAL
    return EXIT_USAGE


def command(fn):
    """Every command's errors end the same way: one line and an exit code (errors.EXIT_*);
    Ctrl-C and SIGTERM say how to resume."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        from .failures import InternalError
        try:
            return fn(*args, **kwargs)
        except (UserError, InternalError, OSError) as exc:
            raise typer.Exit(_report(exc)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: what finished is kept; re-run the same command to resume",
                       err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    return run


def _finite(value):
    """Every float option: a number, not NaN or an infinity."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _positive(value):
    """A float option that must be above zero (seconds, pixels, a learning rate)."""
    _finite(value)
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value} must be above 0")
    return value


# Set by main(): this process was started as the `datatools` command, not called from another
# program (the tests' CliRunner, a notebook) that may have run native thread pools already.
_console_process = False

WORKERS = typer.Option(None, min=1, help="Local Dask workers (default: one per core)")
# Where the work runs: declared here once, added to every command that schedules work by
# @schedules_work, and handed to it as one ClusterOptions (schedule/client.py).
CLUSTER_PARAMS = [
    ("workers", Optional[int], WORKERS),
    ("scheduler", Optional[str], typer.Option(None, help="Use a running Dask cluster: tcp://host:8786")),
    ("cluster_kind", str, typer.Option("local", "--cluster", help="local, or slurm (workers as SLURM jobs)")),
    ("slurm", Optional[list[str]], typer.Option(
        None, "--slurm", help="SLURM setting key=value (repeatable): partition, account, cores, "
        "processes, memory, walltime, jobs, max_jobs, gpus_per_job, extra (an #SBATCH line), "
        "lifetime, stagger")),
    ("cluster_config", Optional[Path], typer.Option(
        None, help="Dask config YAML with the cluster settings (jobqueue.slurm.*), written once per lab")),
    ("gpus", Optional[str], typer.Option(None, help="Local GPU workers: device ids (0,1) or 'all'")),
]


def cluster_options(workers=None, scheduler=None, cluster_kind="local", slurm=None,
                    cluster_config=None, gpus=None):
    from .schedule.client import ClusterOptions
    from .schedule.resources import visible_gpus
    from .schedule.slurm import parse_slurm_options
    devices = []
    if gpus:
        devices = visible_gpus() if gpus == "all" else [d.strip() for d in gpus.split(",") if d.strip()]
        if not devices:
            raise UserError("--gpus all: no GPU on this machine (`nvidia-smi -L` lists none)")
    # fork (schedule/client.py, LOCAL_START): these commands run no native thread pool before
    # their cluster starts, but only the console command's own process is known to be fresh
    return ClusterOptions(workers=workers, scheduler=scheduler, kind=cluster_kind,
                          slurm=parse_slurm_options(slurm or []), config_file=cluster_config,
                          gpus=devices, fork=_console_process)


def schedules_work(fn):
    """A command that schedules work: gets the CLUSTER_PARAMS options, and receives them as
    one ClusterOptions in its `cluster` parameter."""
    sig = inspect.signature(fn)
    kept = [p for p in sig.parameters.values() if p.name != "cluster"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
             for name, kind, option in CLUSTER_PARAMS]

    @functools.wraps(fn)
    def run(*args, **kwargs):
        where = {name: kwargs.pop(name) for name, _, _ in CLUSTER_PARAMS}
        return fn(*args, cluster=cluster_options(**where), **kwargs)

    run.__signature__ = sig.replace(parameters=kept + added)
    return run


def _dataset_app(name: str) -> typer.Typer:
    sub = typer.Typer(help=f"Steps for {datasets.get(name).catalog.title}.", no_args_is_help=True)

    @sub.command("build-lists")
    @command
    def build_lists_cmd(
        root: Path = typer.Option(..., help="Data root, e.g. data/" + name),
        format: str = typer.Option("videos", "--format", help="videos,rawframes,flow (comma-separated)"),
        level: int = typer.Option(2, min=1, max=2, help="2: class folders (Class/name); 1: flat folders"),
        shuffle: bool = typer.Option(False, help="Shuffle lines as MMAction2 does"),
        seed: Optional[int] = typer.Option(None, help="Seed for --shuffle (MMAction2-compatible)"),
        strict: bool = typer.Option(False, help="Exit non-zero if any video or frame folder is missing"),
    ):
        """Join annotations with the disk, update manifest.parquet and write MMAction2 lists."""
        from .lists.build import build_lists, parse_formats
        from .report import print_build_summary
        result = build_lists(name, root, parse_formats(format), level, shuffle, seed)
        print_build_summary(result, root)
        if strict and result.problems:
            typer.echo(f"error: {result.problems} problem(s) found (--strict)", err=True)
            raise typer.Exit(1)

    @sub.command("download")
    @command
    def download_cmd(
        root: Path = typer.Option(..., help="Data root, e.g. data/" + name),
        what: str = typer.Option("all", help="annotations, videos or all"),
        mirror: Optional[str] = typer.Option(None, envvar="DATATOOLS_MIRROR",
                                             help="Base URL replacing the catalog's (a mirror or cache)"),
        from_dir: Optional[Path] = typer.Option(None, help="Use archives fetched by hand from DIR"),
        jobs: int = typer.Option(4, min=1, help="Files fetched in parallel"),
        keep_archives: bool = typer.Option(False, help="Keep archives after unpacking them"),
        checksums: Optional[Path] = typer.Option(None, help="sha256sum-style file of expected hashes"),
        timeout: float = typer.Option(30.0, callback=_positive,
                                      help="Seconds without data before a try fails"),
        retries: int = typer.Option(5, min=0, help="Further tries on connection errors, timeouts, 5xx"),
    ):
        """Download (or take from --from-dir), verify and unpack into the root's layout."""
        from .acquire.http import HttpOptions
        from .acquire.session import DownloadOptions, download, read_checksums
        from .report import DownloadProgress, print_download_summary
        opts = DownloadOptions(what=what, mirror=mirror, from_dir=from_dir, jobs=jobs,
                               keep_archives=keep_archives,
                               checksums=read_checksums(checksums) if checksums else {},
                               http=HttpOptions(timeout=timeout, retries=retries))
        with DownloadProgress() as ui:
            result = download(name, root, opts, ui)
        print_download_summary(result, root)
        for failure in result.failures:  # one line each, never wrapped
            typer.echo(f"error: {failure}", err=True)
        if result.failures:
            raise typer.Exit(1)

    @sub.command("prepare")
    @command
    @schedules_work
    def prepare_cmd(
        root: Path = typer.Option(..., help="Data root, e.g. data/" + name),
        steps: str = typer.Option("download,validate,lists,extract,frame-lists",
                                  help="Which steps, comma-separated (always run in this order)"),
        mirror: Optional[str] = typer.Option(None, envvar="DATATOOLS_MIRROR", help="download: base URL"),
        from_dir: Optional[Path] = typer.Option(None, help="download: archives fetched by hand"),
        jobs: int = typer.Option(4, min=1, help="download: files in parallel"),
        level: str = typer.Option("quick", help="validate: quick or full"),
        task: str = typer.Option("both", help="extract: rgb, flow or both"),
        algo: str = typer.Option("tvl1", help="extract: tvl1 or farneback"),
        backend: str = typer.Option("auto", help="extract: flow backend"),
        new_short: Optional[int] = typer.Option(None, min=2, help="extract: short side N"),
        naming: str = typer.Option("mmaction", help="extract: mmaction or denseflow names"),
        cluster=None,
    ):
        """Run the whole pipeline (download → validate → lists → extract → frame lists);
        re-run the same command to resume after an interruption."""
        from .acquire.session import DownloadOptions
        from .extract.options import ExtractOptions
        from .prepare import PrepareOptions, parse_steps, prepare
        opts = PrepareOptions(
            steps=parse_steps(steps),
            download=DownloadOptions(mirror=mirror, from_dir=from_dir, jobs=jobs),
            level=level,
            extract=ExtractOptions(task=task, algo=algo, backend=backend,
                                   new_short=new_short, naming=naming),
            cluster=cluster)
        ok = prepare(name, root, opts)
        if not ok:
            raise typer.Exit(1)

    @sub.command("validate")
    @command
    @schedules_work
    def validate_cmd(
        root: Path = typer.Option(..., help="Data root, e.g. data/" + name),
        level: str = typer.Option("quick", help="quick: container + a few frames; full: every frame"),
        quarantine: bool = typer.Option(False, "--quarantine", help="Move bad files to ROOT/quarantine/"),
        restore: bool = typer.Option(False, "--restore", help="Put quarantined files back, then stop"),
        strict: bool = typer.Option(False, help="Exit 1 if any video is not ok"),
        force: bool = typer.Option(False, help="Probe every video again, also unchanged ones"),
        cluster=None,
    ):
        """Probe every video in parallel; record status and metadata in the manifest."""
        from .report import console, print_validate_summary
        from .validate.run import restore as restore_files
        from .validate.run import validate
        if restore:
            restored, problems = restore_files(name, root)
            console.print(f"{len(restored)} file(s) restored from quarantine")
            for p in problems:
                typer.echo(f"error: {p}", err=True)
            raise typer.Exit(1 if problems else 0)
        result = validate(name, root, level, cluster, quarantine, force)
        print_validate_summary(result, datasets.get(name).catalog)
        if strict and result.not_ok:
            typer.echo(f"error: {len(result.not_ok)} video(s) not ok (--strict)", err=True)
            raise typer.Exit(1)

    return sub


for _name in datasets.names():
    app.add_typer(_dataset_app(_name), name=_name)


@app.command("datasets")
@command
def list_datasets(names_only: bool = typer.Option(False, "--names", help="Only the names, one per line")):
    """The datasets this installation knows: datatools' own and those of installed plugins
    (entry-point group `datatools.datasets`)."""
    from .report import print_datasets
    registry = datasets.registry()
    if names_only:
        typer.echo("\n".join(registry))
        return
    print_datasets([(name, cls().catalog.title, cls.__module__) for name, cls in registry.items()])


cluster_app = typer.Typer(help="Run datatools on a SLURM cluster.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("sbatch", context_settings={"allow_extra_args": True,
                                                 "ignore_unknown_options": True})
@command
def cluster_sbatch(
    ctx: typer.Context,
    out: Path = typer.Option(..., help="Batch script to write"),
    job_name: str = typer.Option("datatools", help="SLURM job name of the driver"),
    partition: Optional[str] = typer.Option(None, help="Partition of the driver job"),
    account: Optional[str] = typer.Option(None, help="Account to charge"),
    time: str = typer.Option("24:00:00", help="Walltime of the driver job"),
    cpus: int = typer.Option(1, min=1, help="CPUs of the driver job"),
    mem: str = typer.Option("4G", help="Memory of the driver job"),
    extra: Optional[list[str]] = typer.Option(None, help="More #SBATCH lines (repeatable)"),
):
    """Write a batch script running a datatools command as the driver job:
    `datatools cluster sbatch --out job.sh -- DATASET prepare --root data/DATASET --cluster slurm`,
    then `sbatch job.sh`."""
    from .schedule.sbatch import batch_script
    text = batch_script(list(ctx.args), job_name, partition, account, time, cpus, mem, extra or [])
    out.write_text(text)
    out.chmod(0o755)
    typer.echo(f"wrote {out}; submit with: sbatch {out}")


mmaction_app = typer.Typer(help="Train with MMAction2 from a manifest.", no_args_is_help=True)
app.add_typer(mmaction_app, name="mmaction")


@mmaction_app.command("config")
@command
def mmaction_config(
    root: Path = typer.Option(..., help="Data root with a manifest"),
    out: Path = typer.Option(..., help="Config file to write (.py)"),
    model: str = typer.Option("tsn", help="tsn, tsm, i3d or slowonly (MMAction2's zoo)"),
    modality: str = typer.Option("rgb", help="rgb or flow (flow: tsn)"),
    input: str = typer.Option("videos", "--input", help="RGB from videos or rawframes"),
    split: int = typer.Option(1, min=1, max=3, help="Which split's train/val subsets to use"),
    depth: int = typer.Option(50, min=18, max=101, help="ResNet depth: 18, 34, 50 or 101"),
    pretrained: bool = typer.Option(True, help="ImageNet-initialised backbone (needs the download)"),
    crop: int = typer.Option(224, min=1, help="Input size (square crop)"),
    clips: Optional[int] = typer.Option(None, min=1, help="Clips (segments) per video; default: the model's"),
    epochs: int = typer.Option(50, min=1, help="Training epochs"),
    batch_size: int = typer.Option(8, min=1, help="Videos per batch"),
    workers: int = typer.Option(2, min=0, help="Dataloader worker processes"),
    lr: float = typer.Option(0.01, callback=_positive, help="SGD learning rate"),
):
    """Write an MMAction2 config whose datasets read the manifest (no hand-edited paths)."""
    from .mmaction.config import ConfigOptions, write_config
    path = write_config(root, ConfigOptions(model, modality, input, split, depth, pretrained, crop,
                                            clips, epochs, batch_size, workers, lr), out)
    typer.echo(f"wrote {path}; train with: datatools mmaction train {path} "
               "(or MMAction2's tools/train.py)")


@mmaction_app.command("train")
@command
def mmaction_train(
    config: Path = typer.Argument(..., help="A config from `datatools mmaction config`"),
    work_dir: Path = typer.Option(Path("work_dirs/datatools"), help="Logs and checkpoints"),
):
    """Train a config with MMEngine's Runner, then test it on the val subset (top-1)."""
    from .mmaction.train import train_and_test
    metrics = train_and_test(config, work_dir)
    typer.echo("test: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


@app.command()
@command
def fetch(
    urls: list[str] = typer.Argument(..., help="One or more http(s) URLs"),
    to: Path = typer.Option(Path("."), help="Folder the files go to"),
    jobs: int = typer.Option(4, min=1, help="Files fetched in parallel"),
    sha256: Optional[str] = typer.Option(None, help="Expected sha256 (with a single URL)"),
    timeout: float = typer.Option(30.0, callback=_positive, help="Seconds without data before a try fails"),
    retries: int = typer.Option(5, min=0, help="Further tries on connection errors, timeouts, 5xx"),
):
    """Download files with resume, retries and sha256 (what `download` uses, for any URL)."""
    from .acquire.http import HttpOptions, fetch_urls
    from .report import DownloadProgress
    if sha256 and len(urls) > 1:
        raise UserError("--sha256 checks a single file; pass one URL")
    with DownloadProgress() as ui:
        fetched, failures = fetch_urls(urls, to, jobs, HttpOptions(timeout, retries), sha256, ui)
    for f in sorted(fetched, key=lambda f: f.path.name):  # sha256sum's format, never wrapped
        typer.echo(f"{f.sha256}  {f.path}")
    for failure in failures:
        typer.echo(f"error: {failure}", err=True)
    if failures:
        raise typer.Exit(1)


@app.command()
@command
@schedules_work
def extract(
    root: Path = typer.Option(..., help="Data root with a manifest (run build-lists first)"),
    task: str = typer.Option("both", help="rgb, flow or both"),
    algo: str = typer.Option("tvl1", help="tvl1 or farneback"),
    backend: str = typer.Option("auto", help="Flow backend: auto (opencv), opencv, torch (TV-L1 "
                                "batched on CUDA, or CPU), native "
                                "(our C++ datatools-flow) or denseflow (--denseflow-bin)"),
    denseflow_bin: Optional[str] = typer.Option(None, help="A denseflow-compatible executable"),
    new_short: Optional[int] = typer.Option(None, min=2, help="Scale the short side to N (never upscales)"),
    new_size: Optional[str] = typer.Option(None, help="Exact output size WIDTHxHEIGHT"),
    bound: float = typer.Option(20.0, callback=_positive,
                                help="Flow clip bound in pixels (quantization range)"),
    naming: str = typer.Option("mmaction", help="mmaction: 1-based names; denseflow: 0-based"),
    jpeg_quality: int = typer.Option(95, min=1, max=100, help="JPEG quality of RGB and flow images"),
    split: int = typer.Option(1, min=1, help="Which split's membership selects videos"),
    subset: Optional[str] = typer.Option(None, help="train, val or test (default: all)"),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N selected videos"),
    cluster=None,
    force: bool = typer.Option(False, help="Redo videos extracted with other parameters"),
):
    """Extract RGB frames and optical flow for the videos in the manifest."""
    from .extract.options import ExtractOptions, parse_size
    from .extract.run import Selection
    from .extract.run import extract as run_extract
    from .report import print_extract_summary
    opts = ExtractOptions(task=task, algo=algo, backend=backend,
                          new_short=new_short, new_size=parse_size(new_size), bound=bound,
                          naming=naming, jpeg_quality=jpeg_quality, denseflow_bin=denseflow_bin)
    result = run_extract(root, opts, Selection(split, subset, limit),
                         cluster,
                         force)
    print_extract_summary(result, root)
    if result.failures:
        raise typer.Exit(1)


@app.command()
@command
def doctor():
    """Report what is installed, what is missing, and how to fix it."""
    from .doctor import run_doctor
    raise typer.Exit(run_doctor())


@app.command()
@command
def demo(root: Path = typer.Option(Path("demo_data"), help="Where to generate the demo dataset"),
         videos_per_class: int = typer.Option(3, min=1, help="Videos per class (4 classes)"),
         workers: Optional[int] = WORKERS):
    """Generate a small dataset (real motion, a real dataset's layout) and run every step on it."""
    from .demo import run_demo
    run_demo(root, videos_per_class, workers)


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
    raise KeyboardInterrupt


def main() -> None:
    """The `datatools` console command. Once a command has finished and its output is
    flushed, the process leaves through os._exit: the interpreter's teardown (finalizing
    numpy, pyarrow, Dask and their threads) took 0.15 s of every command and serves nothing a
    finished command needs; its files are closed and its clusters shut down by then (context
    managers). An exception other than an exit still goes the normal way, with its traceback."""
    global _console_process
    _console_process = True
    from .lock import set_command
    set_command(" ".join(["datatools", *sys.argv[1:]]))
    # SIGTERM (a batch scheduler's stop, `kill`) ends a command as Ctrl-C does: what finished
    # is saved, and the line says how to resume.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)
