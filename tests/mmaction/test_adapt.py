"""`datatools mmaction config --from`: MMAction2's own zoo configs (and a config file of one's
own) pointed at a datatools root, each checked by MMAction2's own classes: the written config
loads, its train and val datasets build from the manifest and their first sample goes through
the source's pipeline. A config that cannot be adapted is one line saying why."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import datatools, require_module

require_module("mmaction")
from mmaction.registry import DATASETS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from datatools.core.errors import UserError  # noqa: E402
from datatools.mmaction import zoo  # noqa: E402
from datatools.mmaction.adapt import AdaptOptions, adapt  # noqa: E402

SLOWFAST = "slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb"


def first_samples(path: Path) -> dict[str, dict]:
    """Each loader's first sample (RepeatAugDataset gives its repeats as a list: the first)."""
    cfg = Config.fromfile(str(path))
    init_default_scope("mmaction")
    samples = {name: DATASETS.build(cfg[name]["dataset"])[0]
               for name in ("train_dataloader", "val_dataloader")}
    return {name: s[0] if isinstance(s, list) else s for name, s in samples.items()}


# Why a training config that reads videos or frames may be refused here: a package this
# install does not have (the mmaction extra has no torchvision: PyPI's does not load beside
# the pinned CPU torch; so no pytorchvideo or timm; mmcv-lite has no compiled operators).
MISSING = ("pytorchvideo", "torchvision", "mmcls", "mmpretrain", "timm", "compiled operators",
           "is not registered")
# And two that are not datatools' to mend: MMAction2 1.2.0's TSM 1x1x16 config passes
# io_backend to DecordDecode (its own tools/train.py fails the same way), and OmniSource
# trains one head on ImageNet and Kinetics at once.
NOT_OURS = ("DecordDecode.__init__() got an unexpected keyword argument",
            "trained on several datasets at once")


@pytest.mark.slow
def test_every_zoo_config_adapts_or_says_in_one_line_why(zoo_root, tmp_path):
    """The wheel's configs enumerated (no list kept here). Each adapted config is checked
    again here: loaded, both datasets built, their first samples decoded."""
    adapted, refused = [], {}
    for model in zoo.models():
        try:
            text, _ = adapt(model.name, zoo_root, AdaptOptions())
        except UserError as exc:
            assert "\n" not in str(exc) and str(exc)
            refused[model] = str(exc).split(": ", 1)[1]
            continue
        path = tmp_path / f"{model.name}.py"
        path.write_text(text)
        samples = first_samples(path)
        assert all(s["inputs"].ndim >= 4 for s in samples.values()), model.name
        adapted.append(model)
    why = Counter(r.split(" (")[0].split(";")[0].split(":")[0] for r in refused.values())
    print(f"\n{len(adapted)} of {len(zoo.models())} zoo configs adapted; refused: "
          + "; ".join(f"{n} {reason}" for reason, n in why.most_common()))
    for model, reason in refused.items():
        print(f"  {model.name}: {reason}")
    readers = [m for m in zoo.models() if m.trains and m.input in ("videos", "frames", "flow")]
    not_adapted = {m.name: refused[m] for m in readers if m not in adapted}
    for_packages = {n: r for n, r in not_adapted.items() if any(p in r for p in MISSING)}
    print(f"{len([m for m in readers if m in adapted])} of the {len(readers)} training configs "
          f"that read videos or frames adapted; {len(for_packages)} refused for a package not "
          "installed")
    # The target: every training config whose dataset reads videos or frames adapts,
    # unless what it needs is not installed here or the config is MMAction2's to mend.
    assert all(any(p in r for p in MISSING + NOT_OURS) for r in not_adapted.values()), not_adapted
    assert not any("Manifest" in r for r in refused.values())  # what datatools writes is known
    assert sum(any(p in r for p in NOT_OURS) for r in not_adapted.values()) <= len(NOT_OURS)
    assert {m.family for m in adapted} >= {"TSN", "TSM", "I3D", "SlowFast", "SlowOnly",
                                           "TimeSformer", "C3D", "R2Plus1D", "CSN", "Swin",
                                           "TPN", "TRN", "C2D"}
    assert any(m.input == "frames" for m in adapted)  # frames configs read the root's frames


def test_slowfast_by_name_keeps_its_model_and_schedule_and_reads_the_manifest(zoo_root, tmp_path):
    out = tmp_path / "slowfast.py"
    r = datatools("mmaction", "config", "--root", zoo_root, "--from", SLOWFAST, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    source = Config.fromfile(str(zoo.find(SLOWFAST).config))
    cfg = Config.fromfile(str(out))
    assert cfg.model.backbone == source.model.backbone  # the model as the zoo has it
    assert cfg.model.cls_head.num_classes == 4 and source.model.cls_head.num_classes == 400
    assert cfg.optim_wrapper == source.optim_wrapper and cfg.train_cfg == source.train_cfg
    assert cfg.train_dataloader.dataset.type == "ManifestVideoDataset"
    assert cfg.train_dataloader.dataset.pipeline == source.train_dataloader.dataset.pipeline
    assert "load_from" not in cfg or cfg.load_from == source.get("load_from")
    assert first_samples(out)["train_dataloader"]["inputs"].shape[1:3] == (3, 32)  # C, T


def test_finetune_starts_from_the_published_checkpoint_with_a_shorter_schedule(zoo_root, tmp_path):
    out = tmp_path / "ft.py"
    r = datatools("mmaction", "config", "--root", zoo_root, "--from", "slowfast", "--finetune",
                  "--batch-size", "2", "--workers", "0", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    model = zoo.find("slowfast")
    source, cfg = Config.fromfile(str(model.config)), Config.fromfile(str(out))
    assert cfg.load_from == model.weights and cfg.load_from.startswith("https://")
    assert cfg.model.cls_head.num_classes == 4
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(source.optim_wrapper.optimizer.lr / 2)
    assert cfg.train_cfg.max_epochs == round(source.train_cfg.max_epochs / 2)
    assert cfg.train_dataloader.batch_size == 2 and cfg.train_dataloader.num_workers == 0


def test_a_config_file_of_ones_own_adapts_and_frames_configs_read_the_packed_backend(zoo_root, tmp_path):
    frames = next(m for m in zoo.models() if m.input == "frames" and m.config.is_file()
                  and m.family == "TRN")
    own = tmp_path / "lab" / "my_trn.py"  # a lab's config: the zoo's, with its own changes
    own.parent.mkdir()
    own.write_text(f"_base_ = [{str(frames.config)!r}]\n"
                   "train_dataloader = dict(batch_size=3)\n")
    out = tmp_path / "mine.py"
    r = datatools("mmaction", "config", "--root", zoo_root, "--from", own, "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = Config.fromfile(str(out))
    assert cfg.train_dataloader.batch_size == 3  # the lab's change kept
    assert cfg.train_dataloader.dataset.type == "ManifestRawframeDataset"
    decode = [s for s in cfg.train_dataloader.dataset.pipeline if s.type == "RawFrameDecode"]
    assert decode and all(s.io_backend == "datatools_packed" for s in decode)


def test_what_cannot_be_adapted_is_one_line(zoo_root, tmp_path):
    cases = {("--from", "slowfast_r5"): "not a model of MMAction2's recognition zoo; did you mean",
             ("--from", "uniformer-small_imagenet1k-pre_16x4x1_kinetics400-rgb"): "for testing only",
             ("--finetune",): "--finetune adapts a zoo model",
             ("--from", "c3d", "--crop", "224"): "its model does not take a 224-pixel input"}
    for args, message in cases.items():
        r = datatools("mmaction", "config", "--root", zoo_root, *args, "--out", tmp_path / "x.py")
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
        assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.slow
def test_slowfast_trains_an_epoch_with_mmaction2s_own_train_script(zoo_root, tmp_path):
    """The researcher's path: the zoo's SlowFast config adapted to the root, then MMAction2's
    tools/train.py (from its wheel) for one epoch on the CPU."""
    import subprocess
    import sys
    config = tmp_path / "slowfast.py"
    r = datatools("mmaction", "config", "--root", zoo_root, "--from", SLOWFAST, "--epochs", "1",
                  "--batch-size", "2", "--workers", "0", "--seed", "0", "--out", config)
    assert r.returncode == 0, r.stdout + r.stderr
    train = zoo.configs_folder().parent.parent / "tools" / "train.py"
    work = tmp_path / "work"
    run = subprocess.run([sys.executable, str(train), str(config), "--work-dir", str(work)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (work / "epoch_1.pth").is_file()
    logs = list(work.glob("*/*.log"))
    assert logs and "Epoch(val) [1]" in logs[0].read_text() and "acc/top1:" in logs[0].read_text()


def test_the_four_model_names_find_their_zoo_configs_and_overrides_reach_the_config(zoo_root, tmp_path):
    """`tsn`, `tsm`, `i3d`, `slowonly` (the --model names) find their zoo configs by family;
    --crop scales every size of the pipelines, --no-flip drops the training flips, --seed is
    kept, and the total batch the lr was set for is recorded."""
    for name in ("tsn", "tsm", "i3d", "slowonly"):
        assert zoo.find(name).family.lower() == name
    out = tmp_path / "tsm.py"
    r = datatools("mmaction", "config", "--root", zoo_root, "--from", "tsm", "--crop", "112",
                  "--no-flip", "--seed", "3", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    model = zoo.find("tsm")
    source, cfg = Config.fromfile(str(model.config)), Config.fromfile(str(out))

    def sizes(pipeline):
        return [(s.type, s.get("scale") or s.get("crop_size") or s.get("input_size"))
                for s in pipeline if s.type in ("Resize", "CenterCrop", "MultiScaleCrop", "ThreeCrop")]
    assert sizes(source.train_dataloader.dataset.pipeline) == [
        ("Resize", (-1, 256)), ("MultiScaleCrop", 224), ("Resize", (224, 224))]
    assert sizes(cfg.train_dataloader.dataset.pipeline) == [
        ("Resize", (-1, 128)), ("MultiScaleCrop", 112), ("Resize", (112, 112))]
    assert sizes(cfg.val_dataloader.dataset.pipeline) == [("Resize", (-1, 128)), ("CenterCrop", 112)]
    assert any(s.type == "Flip" for s in source.train_dataloader.dataset.pipeline)
    assert not any(s.type == "Flip" for s in cfg.train_dataloader.dataset.pipeline)
    assert cfg.randomness.seed == 3
    assert cfg.auto_scale_lr.base_batch_size == source.auto_scale_lr.base_batch_size
    assert first_samples(out)["train_dataloader"]["inputs"].shape[-2:] == (112, 112)
    assert "train_pipeline" not in cfg and "ann_file_train" not in cfg  # the source's, unused


def test_a_shorter_run_keeps_the_schedules_shape_and_its_total_batch(zoo_root, tmp_path):
    """SlowFast 4x16x1: 256 epochs, a warm-up over the first 34 (counted in iterations), then
    cosine; its config names no total batch, its name does (8 GPUs x 8). With --lr the batch
    size given is the total the rate is for."""
    out = tmp_path / "sf.py"
    r = datatools("mmaction", "config", "--root", zoo_root, "--from", SLOWFAST, "--epochs", "16",
                  "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    source, cfg = Config.fromfile(str(zoo.find(SLOWFAST).config)), Config.fromfile(str(out))
    assert "auto_scale_lr" not in source and cfg.auto_scale_lr.base_batch_size == 64
    (warm, cosine), (warm0, cosine0) = cfg.param_scheduler, source.param_scheduler
    assert (warm0.end, cosine0.end, cosine0.T_max) == (34, 256, 256)
    assert warm.end == pytest.approx(34 * 16 / 256, abs=0.001) and cosine.end == cosine.T_max == 16
    r = datatools("mmaction", "config", "--root", zoo_root, "--from", "tsm", "--epochs", "10",
                  "--lr", "0.002", "--batch-size", "4", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg, source = Config.fromfile(str(out)), Config.fromfile(str(zoo.find("tsm").config))
    steps = next(s for s in source.param_scheduler if s.type == "MultiStepLR")
    assert (steps.milestones, source.train_cfg.max_epochs) == ([25, 45], 50)
    assert next(s for s in cfg.param_scheduler if s.type == "MultiStepLR").milestones == [5, 9]
    assert cfg.optim_wrapper.optimizer.lr == 0.002 and cfg.auto_scale_lr.base_batch_size == 4


def test_a_video_config_reads_the_roots_packed_frames_and_a_frames_config_its_videos(zoo_root, tmp_path):
    """--input: SlowFast (a video config) trained from the root's frames (packs here), TRN
    (a frames config) from its videos; the decode steps change, the rest of the pipeline not."""
    cases = {("slowfast", "rawframes"): ("ManifestRawframeDataset", ["SampleFrames", "RawFrameDecode"]),
             ("trn", "videos"): ("ManifestVideoDataset", ["DecordInit", "SampleFrames", "DecordDecode"])}
    for (name, input_), (dataset, decode) in cases.items():
        out = tmp_path / f"{name}.py"
        r = datatools("mmaction", "config", "--root", zoo_root, "--from", name, "--input", input_,
                      "--out", out)
        assert r.returncode == 0, r.stdout + r.stderr
        source = Config.fromfile(str(zoo.find(name).config)).train_dataloader.dataset.pipeline
        cfg = Config.fromfile(str(out))
        pipeline = cfg.train_dataloader.dataset.pipeline
        assert cfg.train_dataloader.dataset.type == cfg.val_dataloader.dataset.type == dataset
        assert [s.type for s in pipeline][:len(decode)] == decode
        assert [s for s in pipeline if "Decode" not in s.type and "Init" not in s.type] == \
            [s for s in source if "Decode" not in s.type and "Init" not in s.type]
        assert all(s.io_backend == "datatools_packed" for s in pipeline if s.type == "RawFrameDecode")
        assert first_samples(out)["train_dataloader"]["inputs"].ndim >= 4
    r = datatools("mmaction", "config", "--root", zoo_root, "--from", "mvit", "--input", "rawframes",
                  "--out", tmp_path / "mvit.py")
    assert r.returncode == 2 and "decord only" in r.stderr and "Traceback" not in r.stderr
