"""The `torch` TV-L1 backend on CUDA: what tests/test_torch_flow.py checks on the CPU, on the
device (accuracy, a pair's flow independent of its batch, quantization equal to the host rule,
compaction), and the overlapped pipeline (pinned uploads on a side stream, asynchronous copies
back) through the batcher. Runs only where CUDA exists; CI has none."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import VIDEOS, require_module
from middlebury import RUBBER, epe, read_flo
from PIL import Image

torch = require_module("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from test_torch_flow import gray_pairs  # noqa: E402

from datatools.extract.backends.torch_flow import TorchFlow  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    return TorchFlow("tvl1", device="cuda")


def real_pairs(count: int, size=(340, 256)):
    names = ("test.mp4", "bikes.mp4", "test.avi", "demo.mp4")
    per = -(-count // len(names))
    return [p for name in names for p in gray_pairs(name, per, size=size, every=7)][:count]


def test_rubberwhale_on_the_gpu_is_within_0_18_px_of_ground_truth(backend):
    frames = [np.asarray(Image.open(RUBBER / f"frame1{i}.png").convert("L")) for i in (0, 1)]
    error = epe(backend.compute(frames[0], frames[1]), read_flo(RUBBER / "flow10.flo"))
    assert error <= 0.18, f"torch TV-L1 on CUDA: EPE {error:.3f} px"


def test_a_pairs_flow_on_the_gpu_does_not_depend_on_its_batch(backend):
    pairs = real_pairs(16)
    together = backend.compute_batch(pairs)
    shuffled = backend.compute_batch(pairs[::-1])[::-1]
    for k, (a, b) in enumerate(pairs[:4]):
        alone = backend.compute(a, b)
        for other in (together[k], shuffled[k]):
            assert np.abs(alone - other).max() <= 1e-4, f"pair {k}"


def test_gpu_flow_is_within_one_level_of_the_opencv_backend_on_every_real_clip(backend):
    from datatools.extract.backends.opencv_flow import OpenCVFlow
    from datatools.extract.quantize import quantize_flow
    opencv = OpenCVFlow("tvl1")
    for path in sorted(VIDEOS.iterdir()):
        pairs = gray_pairs(path.name, 2, size=None, every=9)
        for (a, b), q in zip(pairs, backend.compute_batch_quantized(pairs, 20.0)):
            flow = opencv.compute(a, b)
            reference = np.stack([quantize_flow(flow[..., c], 20.0) for c in (0, 1)], axis=-1)
            within = float((np.abs(q.astype(int) - reference.astype(int)) <= 1).mean())
            assert within >= 0.995, f"{path.name}: {100 * within:.2f} % within one level"


def test_quantized_on_the_gpu_equals_the_host_rule(backend):
    from datatools.extract.quantize import quantize_flow
    pairs = real_pairs(4)
    for f, q in zip(backend.compute_batch(pairs), backend.compute_batch_quantized(pairs, 20.0)):
        assert np.array_equal(q[..., 0], quantize_flow(f[..., 0], 20.0))
        assert np.array_equal(q[..., 1], quantize_flow(f[..., 1], 20.0))


def test_compaction_on_the_gpu_computes_within_1_15x_of_the_pairs_own_iterations():
    from datatools.extract.backends import tvl1_solver
    pairs = real_pairs(32)
    i0 = torch.from_numpy(np.stack([a for a, _ in pairs])).cuda().float()
    i1 = torch.from_numpy(np.stack([b for _, b in pairs])).cuda().float()
    stats: Counter = Counter()
    tvl1_solver.tvl1(i0, i1, stats=stats)
    assert stats["computed"] <= 1.15 * stats["own"], stats
    assert stats["lockstep"] > stats["computed"], stats


def test_the_batcher_overlaps_batches_and_returns_each_pairs_flow(backend):
    """Batches of 4, so about ten are staged, computed and copied back while others are in
    flight: every pair's flow is the one computed on its own batch."""
    from datatools.extract.batcher import PairBatcher

    class FourAtATime:
        def batch_size(self, width, height):
            return 4

        def upload(self, pairs):
            return backend.upload(pairs)

        def start(self, staged, bound):
            return backend.start(staged, bound)

    pairs = real_pairs(40)
    batcher = PairBatcher(FourAtATime(), 20.0)
    futures = [batcher.submit(a, b, k % 3) for k, (a, b) in enumerate(pairs)]
    flows = [f.result(timeout=300) for f in futures]
    expected = backend.compute_batch_quantized(pairs, 20.0)
    for k, (x, y) in enumerate(zip(flows, expected)):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1, f"pair {k}"
    assert batcher.stats["pairs"] == 40 and batcher.stats["batches"] >= 10
