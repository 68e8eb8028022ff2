"""Train and test a generated config with MMEngine's Runner, as MMAction2's tools/train.py
and tools/test.py do (used by `datatools mmaction train` and the demo)."""

from __future__ import annotations

from pathlib import Path

from .compat import provide_missing_drn


def train_and_test(config: Path, work_dir: Path) -> dict:
    """Train for the config's epochs, then run its test loop; returns the test metrics
    (`acc/top1`, `acc/top5`, `acc/mean1`). Checkpoints go to work_dir."""
    provide_missing_drn()
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work_dir)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner.test()
