"""The command line as a user and a batch system meet it: every bad invocation is one line and
a documented exit code, output piped to a file stays greppable, Ctrl-C and SIGTERM say how to
resume, and `prepare` works on data that is already there. Every command here is a real
`datatools` process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import VIDEOS, datatools, tmpfs
from nginx import free_port
from trees import real_clips_root, ucf101_style_root

from datatools.core.console import PROGRESS_ENV
from datatools.root.manifest import read_manifest

BIN = Path(sys.executable).parent / "datatools"
URL = "http://127.0.0.1:9/file.bin"
LONG_CLASS = "ApplyEyeMakeupWithAClassNameLongEnoughThatAnyWrappedLineWouldSplitItsPaths"


def error_lines(res: subprocess.CompletedProcess) -> list[str]:
    """What the command said on stderr besides the log's name and deprecation warnings."""
    return [line for line in res.stderr.splitlines()
            if line.strip() and not line.startswith(("log: ", "warning: "))]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A root with a manifest, a file where a root should be, a read-only root, and a port
    that nothing listens on."""
    base = tmp_path_factory.mktemp("cli")
    root = real_clips_root(base / "root", ["test.avi"])
    (base / "afile").write_text("not a folder\n")
    mount = base / "ro"
    with tmpfs(mount, "8m"):
        shutil.copytree(root, mount / "root")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield {"ROOT": root, "AFILE": base / "afile", "RO": mount / "root",
               "MISSING": base / "missing", "OUT": base / "out.py", "PORT": free_port()}


# (arguments, exit code, what the one error line must name); ROOT, AFILE, RO, MISSING, OUT and
# PORT are replaced by the fixture's places.
BAD = [
    (["extract", "--root", "ROOT", "--split", "0"], 2, "--split"),
    (["extract", "--root", "ROOT", "--split", "5"], 2, "--split 5: ucf101 has 3 split(s)"),
    (["extract", "--root", "ROOT", "--subset", "Train"], 2, "--subset Train"),
    (["extract", "--root", "ROOT", "--new-size", "big"], 2, "--new-size"),
    (["extract", "--root", "ROOT", "--task", "all"], 2, "--task"),
    (["extract", "--root", "ROOT", "--bound", "inf"], 2, "--bound"),
    (["extract", "--root", "ROOT", "--scheduler", "bogus"], 2, "--scheduler bogus"),
    (["extract", "--root", "ROOT", "--scheduler", "tcp://127.0.0.1:PORT"], 2, "127.0.0.1:PORT"),
    (["extract", "--root", "ROOT", "--cluster", "pbs"], 2, "--cluster"),
    (["extract", "--root", "ROOT", "--gpus", "abc"], 2, "--gpus abc"),
    (["extract", "--root", "ROOT", "--slurm", "partition"], 2, "--slurm"),
    (["extract", "--root", "AFILE"], 2, "not a directory"),
    (["extract", "--root", "MISSING"], 2, "MISSING"),
    (["mmaction", "config", "--root", "ROOT", "--out", "OUT", "--split", "5"], 2, "--split"),
    (["mmaction", "config", "--root", "ROOT", "--out", "OUT", "--batch-size", "0"], 2, "--batch-size"),
    (["mmaction", "config", "--root", "ROOT", "--out", "OUT", "--epochs", "0"], 2, "--epochs"),
    (["mmaction", "config", "--root", "ROOT", "--out", "OUT", "--lr", "nan"], 2, "--lr"),
    (["mmaction", "train", "MISSING/missing.py"], 2, "missing.py"),
    (["mmaction", "train", "AFILE"], 2, "not an MMEngine config"),
    (["fetch", "notaurl"], 2, "notaurl"),
    (["fetch", "ftp://127.0.0.1/file.bin"], 2, "ftp://"),
    (["fetch", "http:///file.bin"], 2, "no host"),
    (["fetch", "--retries", "-1", URL], 2, "--retries"),
    (["fetch", "--timeout", "0", URL], 2, "--timeout"),
    (["fetch", "--timeout", "nan", URL], 2, "--timeout"),
    (["fetch", "--sha256", "abc", URL], 2, "--sha256"),
    (["fetch", "--to", "AFILE", URL], 2, "--to"),
    (["ucf101", "download", "--root", "ROOT", "--checksums", "MISSING/SHA256SUMS"], 2, "--checksums"),
    (["ucf101", "download", "--root", "ROOT", "--from-dir", "MISSING"], 2, "--from-dir"),
    (["ucf101", "download", "--root", "ROOT", "--what", "everything"], 2, "--what"),
    (["ucf101", "download", "--root", "ROOT", "--mirror", "ftp://127.0.0.1/"], 2, "--mirror"),
    (["ucf101", "download", "--root", "AFILE"], 2, "not a directory"),
    (["ucf101", "build-lists", "--root", "AFILE"], 2, "not a directory"),
    (["ucf101", "build-lists", "--root", "ROOT", "--format", "frames"], 2, "--format"),
    (["ucf101", "build-lists", "--root", "ROOT", "--level", "3"], 2, "--level"),
    (["ucf101", "validate", "--root", "ROOT", "--check", "deep"], 2, "--check"),
    (["ucf101", "validate", "--root", "RO"], 4, "read-only"),
    (["ucf101", "prepare", "--root", "ROOT", "--steps", "unpack"], 2, "--steps"),
    (["ucf101", "prepare", "--root", "ROOT", "--subset", "Val"], 2, "--subset"),
    (["hmdb51", "nosuch"], 2, "nosuch"),
    (["nosuch"], 2, "nosuch"),
    (["cluster", "sbatch", "--out", "OUT", "--", "nosuch", "prepare"], 2, "nosuch"),
    (["cluster", "sbatch", "--out", "OUT", "--", "ucf101", "prepare"], 2, "--root"),
]


@pytest.mark.parametrize("args,code,names", BAD, ids=[" ".join(a[:4]) for a, _, _ in BAD])
def test_a_bad_invocation_is_one_line_naming_the_culprit_and_a_documented_exit(places, args, code, names):
    def place(text: str) -> str:
        for key, value in places.items():
            text = text.replace(key, str(value))
        return text
    res = datatools(*[place(a) for a in args], timeout=60)
    said = res.stdout + res.stderr
    assert res.returncode == code, said
    assert "Traceback" not in said
    lines = error_lines(res)
    assert len(lines) == 1 and lines[0].startswith("error: "), said
    assert place(names) in lines[0], said


def test_restore_without_a_quarantine_says_so_and_writes_nothing(places, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(places["ROOT"], root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    res = datatools("ucf101", "validate", "--root", root, "--restore")
    assert res.returncode == 0, res.stderr
    assert "nothing to restore" in res.stdout
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_frame_lists_before_any_extraction_say_to_extract(places, tmp_path):
    root = tmp_path / "root [bold]x[/bold]"  # brackets in a path are not markup
    shutil.copytree(places["ROOT"], root)
    res = datatools("ucf101", "build-lists", "--root", root, "--format", "rawframes,flow")
    assert res.returncode == 0, res.stderr
    assert f"no frames extracted yet under {root}" in res.stdout
    last = res.stdout.splitlines()[-1]  # every run that worked names its log
    assert last.startswith(f"log: {root}/logs/build-lists-") and Path(last[5:]).is_file()
    assert f"datatools extract --root '{root}'" in res.stdout  # quoted: it holds spaces


def test_every_option_of_every_step_is_an_option_of_prepare():
    """`prepare` runs the steps, so it takes what they take (their own switches aside)."""
    import typer.main

    from datatools.cli.app import app
    top = typer.main.get_command(app)
    ucf = top.commands["ucf101"].commands
    options = lambda cmd: {o for p in cmd.params for o in p.opts}  # noqa: E731
    prepare = options(ucf["prepare"])
    own = {"--format", "--restore", "--root"}  # which lists prepare writes is its own plan
    for step in (ucf["download"], ucf["validate"], ucf["build-lists"], top.commands["extract"]):
        assert options(step) - own - prepare == set(), step.name
    assert "--check" in prepare and "--level" in prepare


def test_help_shows_plain_metavars():
    for args in (["fetch"], ["ucf101", "validate"], ["ucf101", "prepare"], ["extract"],
                 ["mmaction", "train"], ["cluster", "sbatch"]):
        res = datatools(*args, "--help")
        assert res.returncode == 0, res.stderr
        for typer_type in ("<bool>", "<path>", "<str>", "<int", "<float>", "{"):
            assert typer_type not in res.stdout, (args, typer_type)
        if args == ["fetch"]:
            assert "Usage: datatools fetch [OPTIONS] URL..." in res.stdout, res.stdout


# --- output that survives a batch log ---------------------------------------------------------

def test_extract_piped_to_a_file_keeps_whole_lines_progress_and_a_log(tmp_path):
    """Output to a file, as a batch job's: no line wrapped (COLUMNS is small on purpose),
    plain progress lines, one line per failed video, and the log named in the last line holds
    the command line and that video's traceback."""
    root = real_clips_root(tmp_path / "root", ["test.avi"] * 2, LONG_CLASS)
    second = f"{LONG_CLASS}/v_{LONG_CLASS}_g02_c01.avi"
    assert datatools("ucf101", "validate", "--root", root, "--workers", "1").returncode == 0
    # The second clip is cut in half behind the manifest's back (size and time kept), so
    # its decoder stops early: a failure with a traceback, not a verdict of the probe.
    cut = root / "videos" / second
    data, stat = cut.read_bytes(), cut.stat()
    cut.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    os.utime(cut, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    out = tmp_path / "job.out"
    with open(out, "w") as f:
        res = subprocess.run([str(BIN), "extract", "--root", str(root), "--task", "rgb",
                              "--workers", "1"], stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, "COLUMNS": "40"}, timeout=300)
    text = out.read_text()
    assert res.returncode == 1, text
    assert "Traceback" not in text
    lines = text.splitlines()
    progress = [line for line in lines if line.startswith("extract: ")]
    assert progress and progress[-1].startswith("extract: 2/2 videos, "), text
    assert "\x1b" not in text and "\r" not in text  # no colours, no redrawn bar
    failed = [line for line in lines if line.startswith("failed: ")]
    assert len(failed) == 1 and f"videos/{second}" in failed[0], text
    assert "decoding stopped after" in failed[0]
    assert lines[-1].startswith("log: "), text
    log = Path(lines[-1][len("log: "):])
    assert log.parent == root / "logs" and log.name.startswith("extract-")
    logged = log.read_text()
    assert logged.startswith(f"command: datatools extract --root {root} --task rgb --workers 1")
    versions = next(line for line in logged.splitlines() if line.startswith("versions: "))
    for package in ("datatools ", "python ", "numpy ", "opencv-contrib-python-headless ", "dask "):
        assert package in versions, versions
    assert "Traceback (most recent call last)" in logged and "DecodeError" in logged
    assert f"failed: videos/{second}" in logged


# --- resume said out loud --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("signum,group,code,word", [
    (signal.SIGINT, True, 130, "interrupted"),  # Ctrl-C: the terminal signals the whole group
    (signal.SIGTERM, False, 143, "terminated"),  # scancel / walltime / kill: the driver
])
def test_a_stopped_extract_says_how_far_it_got_and_a_rerun_finishes(tmp_path, signum, group, code, word):
    root = real_clips_root(tmp_path / "root", ["test.avi"] * 8)
    args = [str(BIN), "extract", "--root", str(root), "--task", "rgb", "--workers", "2"]
    # As from a shell with job control: Ctrl-C is not ignored (a test runner started in the
    # background may pass SIGINT on ignored, and Python then leaves it so). A plain progress
    # line per video recorded: the stop comes once the driver has counted one.
    env = {**os.environ, PROGRESS_ENV: "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    marks = lambda: list((root / "rawframes").rglob(".datatools-done.json"))  # noqa: E731
    counted = 0
    for line in proc.stdout:
        if line.startswith("extract: ") and not line.startswith("extract: 0/"):
            counted = int(line.split()[1].split("/")[0])
            break
    assert proc.poll() is None and 1 <= counted < 8, "the run ended before it could be stopped"
    if group:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stdout + stderr
    assert "Traceback" not in stdout + stderr
    said = [line for line in stderr.splitlines() if line.startswith(f"{word}: ")]
    assert len(said) == 1 and "of 8 videos done in extract; run the same command again to resume" \
        in said[0], stderr
    done = int(said[0].split()[1])
    # At least what was counted before the stop; workers may have finished more folders than
    # the driver heard of (a chunk of videos reports at once): the rerun keeps those.
    assert counted <= done <= len(marks())
    records = {r.video_id: r.extract_status for r in read_manifest(root)[0]}
    assert sum(status == "done" for status in records.values()) == done  # what it said is saved

    again = datatools(*args[1:], timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(marks()) == 8


def test_a_stop_inside_a_together_section_is_raised_when_the_section_ends():
    """The rule behind the count above: a signal that arrives between saving a video as done
    and counting it waits for both."""
    from datatools.core import interruption
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: interruption.stop())
    steps = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with interruption.together():
                steps.append("saved")
                os.kill(os.getpid(), signal.SIGUSR1)
                for _ in range(1000):  # the handler runs at the next bytecode boundary
                    pass
                steps.append("counted")
        assert steps == ["saved", "counted"]
        with pytest.raises(KeyboardInterrupt):  # outside a section: at once
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(1000):
                pass
            steps.append("not reached")
        assert steps == ["saved", "counted"]
        with pytest.raises(KeyboardInterrupt):  # a second stop while one is held: at once
            with interruption.together():
                os.kill(os.getpid(), signal.SIGUSR1)
                os.kill(os.getpid(), signal.SIGUSR1)
                for _ in range(1000):
                    pass
                steps.append("not reached")
        assert steps == ["saved", "counted"]
        with pytest.raises(OSError):  # the block's own error is what ends it
            with interruption.together():
                os.kill(os.getpid(), signal.SIGUSR1)
                for _ in range(1000):
                    pass
                raise OSError(28, "No space left on device")
        with interruption.together():  # and the stop it replaced is not raised later
            steps.append("next")
        assert steps == ["saved", "counted", "next"]
    finally:
        signal.signal(signal.SIGUSR1, previous)


# --- prepare on data that is already there -----------------------------------------------------

def test_prepare_uses_data_already_there_without_the_network_and_missing_clips_are_a_count(tmp_path):
    """The videos and annotations are in place (not downloaded by datatools); the mirror is a
    port nothing listens on, so any request would fail. One annotated clip is missing: a
    count in the summary, exit 0; with --strict, exit 1."""
    files = {f"Real/v_Real_g{i:02d}_c01.avi": str(VIDEOS / "test.avi") for i in (1, 2)}
    files["Real/v_Real_g03_c01.avi"] = None  # annotated, not on disk
    root = ucf101_style_root(tmp_path / "root", files)
    dead = f"http://127.0.0.1:{free_port()}/ucf101/"
    common = ["ucf101", "prepare", "--root", root, "--mirror", dead, "--workers", "1",
              "--task", "rgb", "--new-short", "64"]
    t0 = time.monotonic()
    res = datatools(*common, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "annotations and videos already in" in res.stdout
    assert "1 videos in a split but missing on disk" in res.stdout
    assert "5/5 frame-lists" in res.stdout and "no problems" not in res.stdout
    assert not (root / "downloads").exists()
    assert time.monotonic() - t0 < 120
    lines = (root / "ucf101_train_split_1_rawframes.txt").read_text().splitlines()
    assert len(lines) == 2

    strict = datatools(*common, "--steps", "download,validate,lists", "--strict", timeout=300)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "Traceback" not in strict.stdout + strict.stderr


def test_prepare_without_the_data_names_the_failed_step_and_how_to_skip_it(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/ucf101/"
    res = datatools("ucf101", "prepare", "--root", tmp_path / "root", "--mirror", dead,
                    "--retries", "0", timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert "connection refused" in res.stderr
    assert "skip it with --steps validate,lists,extract,frame-lists" in res.stdout
