"""`datatools demo`: a small dataset in UCF101's real layout, then every step that exists.

Videos are textured shapes moving over a textured background (real motion for optical flow),
written as MPEG-4 Part 2 AVI like UCF101's; annotations are in the official formats (classInd
with CRLF, trainlist with labels, testlist without), with test group k in split k.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from rich.table import Table

from ..core.console import console, heading
from ..core.errors import ProblemsFound
from ..extract.options import ExtractOptions
from ..extract.run import Selection
from ..lists.build import ListOptions
from ..schedule.client import ClusterOptions
from . import steps

# Class name -> per-frame displacement of the foreground shape (dx, dy) in pixels.
MOTIONS = {"DriftRight": (3, 0), "DriftDown": (0, 3), "DriftDiagonal": (2, 2), "DriftLeft": (-3, 0)}
SIZE = (160, 120)  # width, height: small, so that CPU TV-L1 on the demo takes seconds
FRAMES = 24
FPS = 25
EPOCHS = 30  # from scratch on 8 videos: about 25 s per model on 2 cores
LEARNS = 0.75  # val top-1 the flow model must reach (chance: 0.25)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random texture: noise blurred at two scales, so TV-L1 has gradients to track."""
    import cv2
    noise = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    big = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.add(big, fine), (3, 3), 0)


def write_video(path: Path, motion: tuple[int, int], seed: int) -> None:
    import cv2
    rng = np.random.default_rng(seed)
    w, h = SIZE
    background = _texture(rng, h + 64, w + 64)
    patch = _texture(rng, 40, 40)
    x0, y0 = int(rng.integers(20, w - 60)), int(rng.integers(20, h - 60))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"XVID"), FPS, SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write XVID video")
    for t in range(FRAMES):
        # The camera pans slowly (background moves by 1 px/frame) while the shape moves fast.
        frame = background[32 - t // 2: 32 - t // 2 + h, 32 - t // 2: 32 - t // 2 + w].copy()
        x = (x0 + motion[0] * t) % (w - 40)
        y = (y0 + motion[1] * t) % (h - 40)
        frame[y:y + 40, x:x + 40] = patch
        writer.write(frame)
    writer.release()


def make_dataset(root: Path, videos_per_class: int = 3) -> Path:
    """Write videos/<Class>/v_<Class>_gGG_c01.avi and the official split files under root."""
    root = Path(root)
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    classes = list(MOTIONS)
    lines = [f"{i} {c}" for i, c in enumerate(classes, start=1)]
    (ann / "classInd.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    for split in (1, 2, 3):
        train, test = [], []
        for ci, cls in enumerate(classes, start=1):
            for g in range(1, videos_per_class + 1):
                rel = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
                # UCF101 puts groups 1-7 / 8-14 / 15-21 in the test set of split 1 / 2 / 3.
                (test if (g - 1) % 3 == split - 1 else train).append((rel, ci))
        (ann / f"trainlist{split:02d}.txt").write_bytes(
            "".join(f"{rel} {ci}\r\n" for rel, ci in train).encode())
        (ann / f"testlist{split:02d}.txt").write_bytes(
            "".join(f"{rel}\r\n" for rel, _ in test).encode())
    for ci, (cls, motion) in enumerate(MOTIONS.items()):
        folder = root / "videos" / cls
        folder.mkdir(parents=True, exist_ok=True)
        for g in range(1, videos_per_class + 1):
            path = folder / f"v_{cls}_g{g:02d}_c01.avi"
            if not path.exists():
                write_video(path, motion, seed=ci * 100 + g)
    return root


def train_tsn(root: Path, modality: str) -> float:
    """TSN from scratch on the demo's RGB frames or flow; its val top-1. The classes differ
    only by the direction the shape moves, so training flips (left <-> right) are off and
    the seed is fixed: the same run gives the same figure."""
    from ..mmaction.config import ConfigOptions, write_config
    from ..mmaction.train import train_and_test
    config = write_config(root, ConfigOptions(
        modality=modality, input="rawframes", depth=18, pretrained=False, crop=64, epochs=EPOCHS,
        lr=0.02, batch_size=4, workers=0, flip=False, seed=0), root / f"tsn_demo_{modality}.py")
    metrics = train_and_test(config, root / "work_dirs" / f"tsn_demo_{modality}")
    console.print(f"config: {config}; val top-1 {metrics['acc/top1']:.2f}")
    return float(metrics["acc/top1"])


def print_contrast(top1: dict[str, float], chance: float) -> None:
    """RGB against flow on the same videos: the reason datatools extracts flow."""
    table = Table(show_edge=False)
    for col in ("TSN trained on", "val top-1", "chance"):
        table.add_column(col, justify="left" if col.startswith("TSN") else "right")
    for modality, value in top1.items():
        table.add_row("RGB frames" if modality == "rgb" else "TV-L1 flow", f"{value:.2f}",
                      f"{chance:.2f}")
    console.print(table)
    console.print("The classes differ only by the direction a shape moves: every flow pair "
                  "shows it, a single RGB frame does not (RGB's figure on 4 val videos moves "
                  "from run to run). That is why datatools extracts flow.")


def _strict(step: str, outcome: steps.StepOutcome) -> None:
    if outcome.failed or outcome.problems:
        raise ProblemsFound(f"demo: {step}: {outcome.failed or outcome.problems}")


def run_demo(root: Path, videos_per_class: int = 3, workers: int | None = None) -> None:
    root = Path(root)
    heading("1. generate a small UCF101-layout dataset")
    make_dataset(root, videos_per_class)
    console.print(f"{len(MOTIONS) * videos_per_class} videos under {root / 'videos'}")
    heading("2. validate (full decode, local Dask cluster)")
    cluster = ClusterOptions(workers=workers)
    # The demo's data is made to be clean: any problem is a failure.
    _strict("validate", steps.validate("ucf101", root, "full", cluster))
    heading("3. build-lists (videos)")
    _strict("build-lists", steps.build_lists("ucf101", root, ["videos"], ListOptions()))
    heading("4. extract RGB frames and TV-L1 flow")
    _strict("extract", steps.extract(root, ExtractOptions(task="both", algo="tvl1"), Selection(),
                                     cluster))
    heading("5. build-lists (rawframes, flow)")
    _strict("build-lists", steps.build_lists("ucf101", root, ["videos", "rawframes", "flow"],
                                             ListOptions()))
    if importlib.util.find_spec("mmaction") and importlib.util.find_spec("torch"):
        heading(f"6. train TSN on RGB frames and on TV-L1 flow (ResNet-18, CPU, {EPOCHS} epochs "
                "each) from the manifest with MMAction2")
        top1 = {modality: train_tsn(root, modality) for modality in ("rgb", "flow")}
        print_contrast(top1, chance=1 / len(MOTIONS))
        if top1["flow"] < LEARNS:
            raise ProblemsFound(f"demo: TSN on flow reached val top-1 {top1['flow']:.2f}, below "
                                f"{LEARNS}: the flow it trained on does not show the motion")
    else:
        console.print("MMAction2 not installed (pip install '.[mmaction]'): training step skipped")
    heading("done")
    console.print(f"manifest: {root / 'manifest.parquet'}")
