"""Make the MMAction2 1.2.0 wheel importable: it lacks `mmaction.models.localizers.drn`.

The wheel's `mmaction/models/localizers/__init__.py` runs `from .drn.drn import DRN`, but the
`drn` package was left out of the wheel, so `import mmaction.models` (and therefore building
any model) fails with ModuleNotFoundError. Where that package is missing, a stand-in module is
put in `sys.modules` before MMAction2 imports it: its `DRN` raises a clear error if anyone
builds a DRN localizer, and everything else imports as usual. Nothing in site-packages is
touched, and an MMAction2 that ships the package is left alone.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

MISSING = "mmaction.models.localizers.drn"


class DRN:  # noqa: D101 - stand-in, see module docstring
    def __init__(self, *args, **kwargs):
        raise ImportError("the DRN localizer is not in the MMAction2 1.2.0 wheel "
                          "(mmaction/models/localizers/drn is missing); install MMAction2 from "
                          "source to use it")


def drn_is_missing() -> bool:
    """True when the installed mmaction lacks the drn package (checked on disk: asking the
    import system would import mmaction.models.localizers, the import that fails)."""
    spec = importlib.util.find_spec("mmaction")
    if spec is None or spec.origin is None:
        return False
    return not (Path(spec.origin).parent / "models" / "localizers" / "drn").is_dir()


def provide_missing_drn() -> bool:
    """Register the stand-in if needed; returns whether it did. Safe to call repeatedly."""
    if MISSING in sys.modules or not drn_is_missing():
        return False
    package = types.ModuleType(MISSING)
    package.__path__ = []  # a package, so that `.drn.drn` resolves below it
    module = types.ModuleType(MISSING + ".drn")
    module.DRN = DRN
    package.drn = module
    sys.modules[MISSING] = package
    sys.modules[MISSING + ".drn"] = module
    return True


def allow_mmengine_checkpoints() -> None:
    """Let torch >= 2.6 load the checkpoints MMEngine writes.

    torch.load now defaults to weights_only=True, which refuses any class it was not told
    about; MMEngine's checkpoints carry its message hub (HistoryBuffer objects holding numpy
    arrays), so MMAction2's tools/test.py and `resume` fail on a checkpoint tools/train.py has
    just written. The classes those checkpoints contain are added to torch's allowlist (and
    nothing more: loading stays weights-only for anything else)."""
    import builtins

    import numpy as np
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    if not hasattr(torch.serialization, "add_safe_globals"):
        return  # an older torch: weights_only is off by default
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    torch.serialization.add_safe_globals([HistoryBuffer, np.ndarray, np.dtype, multiarray.scalar,
                                          multiarray._reconstruct, builtins.getattr, *dtypes])


def hue_jitter_for_numpy2() -> None:
    """MMAction2 1.2.0's ColorJitter shifts the hue of a uint8 image by a negative Python int
    for half its random draws; NumPy 2 refuses that (OverflowError: out of bounds for uint8),
    so any config with ColorJitter(hue > 0) fails at random in training. The same rule, with
    the shift done in a wider type (what NumPy 1 did implicitly), replaces the method; the
    wheel's file is left as it is."""
    import cv2
    import numpy as np
    from mmaction.datasets.transforms.processing import ColorJitter

    def adjust_hue(img, factor):
        img = np.clip(img, 0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        offset = int(factor * 255)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + offset) % 180).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)

    ColorJitter.adjust_hue = staticmethod(adjust_hue)
