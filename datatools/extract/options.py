"""What an extraction run produces: task, flow algorithm and backend, size, naming, quality.

The options that change the output (everything but scheduling) are the extraction's
parameters: they are written into each video's completion record, and a re-run skips a video
only when its record holds the same parameters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from ..core.errors import UserError, one_of
from ..frames.folder import NAMINGS
from ..frames.packs import STORAGES

TASKS = ("rgb", "flow", "both")
DEFAULT_BACKEND = "opencv"  # what --backend auto means: needs nothing beyond the pip install
ALGOS = ("tvl1", "farneback")


@dataclass(frozen=True)
class ExtractOptions:
    task: str = "both"
    algo: str = "tvl1"
    backend: str = "opencv"
    new_short: int | None = None
    new_size: tuple[int, int] | None = None  # (width, height)
    bound: float = 20.0
    naming: str = "mmaction"
    jpeg_quality: int = 95
    denseflow_bin: str | None = None  # the executable of --backend denseflow
    build: str | None = None  # the extractor's build where it computes another algorithm ("cuda")
    store: str = "files"  # where the frames go; not a parameter of the frames (the same bytes)

    def __post_init__(self):
        object.__setattr__(self, "backend", resolve_backend(self.backend))  # recorded by its real name
        one_of("--task", self.task, TASKS)
        one_of("--algo", self.algo, ALGOS)
        one_of("--store", self.store, STORAGES)
        one_of("--naming", self.naming, NAMINGS)
        if self.new_short is not None and self.new_size is not None:
            raise UserError("--new-short and --new-size exclude each other; pick one")
        if self.new_short is not None and self.new_short < 2:
            raise UserError(f"--new-short {self.new_short}: must be at least 2")
        if not 1 <= self.jpeg_quality <= 100:
            raise UserError(f"--jpeg-quality {self.jpeg_quality}: must be 1..100")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise UserError(f"--bound {self.bound}: must be a positive number of pixels")

    @property
    def rgb(self) -> bool:
        return self.task in ("rgb", "both")

    @property
    def flow(self) -> bool:
        return self.task in ("flow", "both")

    @property
    def rgb_template(self) -> str:
        return NAMINGS[self.naming][0]

    @property
    def flow_template(self) -> str:
        return NAMINGS[self.naming][1]

    @property
    def start_index(self) -> int:
        return NAMINGS[self.naming][2]

    @property
    def parts(self) -> tuple[str, ...]:
        """What the task writes into a frame folder: "rgb", "flow" or both."""
        return tuple(p for p, wanted in (("rgb", self.rgb), ("flow", self.flow)) if wanted)

    def common_params(self) -> dict:
        """What every part of one frame folder must share: the frame size rule and naming."""
        return {"naming": self.naming, "new_short": self.new_short,
                "new_size": list(self.new_size) if self.new_size else None}

    def part_params(self, part: str) -> dict:
        """What else one part's files depend on."""
        if part == "rgb":
            return {"jpeg_quality": self.jpeg_quality}
        params = {"algo": self.algo, "backend": self.backend, "bound": self.bound,
                  "jpeg_quality": self.jpeg_quality}
        return {**params, "build": self.build} if self.build else params

    def only(self, parts: tuple[str, ...]) -> ExtractOptions:
        """The same options restricted to some of this task's parts."""
        task = "both" if len(parts) == 2 else parts[0]
        return replace(self, task=task) if task != self.task else self

    def params(self) -> dict:
        """What the output depends on (the completion record's `params`)."""
        p = asdict(self)
        p["new_size"] = list(self.new_size) if self.new_size else None
        del p["denseflow_bin"]  # where the tool lives is not a property of the output
        del p["store"]  # nor where the frames are kept
        if not self.flow:  # flow settings do not change RGB-only output
            p.update(algo=None, backend=None, bound=None, build=None)
        if p["build"] is None:
            del p["build"]  # as recorded before builds were told apart
        return p


def resolve_backend(name: str) -> str:
    return DEFAULT_BACKEND if name == "auto" else name


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'340x256' -> (340, 256)."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--new-size {text!r}: expected WIDTHxHEIGHT, e.g. 340x256") from None
    if w < 2 or h < 2:
        raise UserError(f"--new-size {text!r}: both sides must be at least 2")
    return w, h


def output_size(width: int, height: int, opts: ExtractOptions) -> tuple[int, int]:
    """The (width, height) frames are written at.

    --new-size is exact. --new-short scales the short side to N and the long side to
    round-half-up(long * N / short), and never upscales (a video whose short side is already
    <= N keeps its size): 1920x1080 with --new-short 256 gives 455x256 (455.11 rounds down).
    """
    if opts.new_size is not None:
        return opts.new_size
    if opts.new_short is None or min(width, height) <= opts.new_short:
        return width, height
    n = opts.new_short
    if width <= height:
        return n, int(height * n / width + 0.5)
    return int(width * n / height + 0.5), n
