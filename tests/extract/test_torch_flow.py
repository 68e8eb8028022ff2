"""The `torch` TV-L1 backend on the CPU (CI has no GPU), through its fused (torch.compile)
steps: accuracy against Middlebury ground truth and against the `opencv` backend on every real
clip, compaction (iterations computed against the pairs' own counts, results bitwise those of
each pair alone), the median network, and the backend through the batcher and `datatools extract`.
tests/test_torch_flow_gpu.py checks the same on a GPU where one exists."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import VIDEOS, require_module
from middlebury import RUBBER, epe, read_flo
from PIL import Image
from trees import tree_bytes, ucf101_style_root

from datatools.extract.frames import iter_frames, resize, to_gray
from datatools.extract.options import ExtractOptions
from datatools.extract.run import extract
from datatools.lists.build import build_lists
from datatools.schedule.client import ClusterOptions

torch = require_module("torch")  # the gpu/mmaction extras
from datatools.extract.backends.torch_flow import TorchFlow  # noqa: E402


def gray_pairs(name: str, count: int, size=(170, 128), every: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` consecutive-frame pairs, one starting every `every` frames; size None: the
    clip's own size, or 340x256 where it is larger."""
    pairs, prev = [], None
    for i, frame in enumerate(iter_frames(str(VIDEOS / name))):
        h, w = frame.shape[:2]
        gray = to_gray(resize(frame, size or ((340, 256) if w * h > 340 * 256 else (w, h))))
        if prev is not None and (i - 1) % every == 0:
            pairs.append((prev, gray))
            if len(pairs) == count:
                break
        prev = gray
    return pairs


@pytest.fixture(scope="module")
def backend():
    return TorchFlow("tvl1", device="cpu")


def test_rubberwhale_float_flow_is_within_0_18_px_of_ground_truth(backend):
    frames = [np.asarray(Image.open(RUBBER / f"frame1{i}.png").convert("L")) for i in (0, 1)]
    flow = backend.compute(frames[0], frames[1])
    error = epe(flow, read_flo(RUBBER / "flow10.flo"))
    assert error <= 0.18, f"torch TV-L1 EPE {error:.3f} px (OpenCV: 0.156)"


def test_quantized_flow_is_within_one_level_of_the_opencv_backend_on_every_real_clip(backend):
    """Two pairs of every clip in ../shared/data/videos, at 340x256 where larger: >= 99.5 %
    of the quantized flow pixels (bound 20, as extract writes them) within one level of
    what `--backend opencv` writes, in every pair."""
    import cv2

    from datatools.extract.backends.opencv_flow import OpenCVFlow
    from datatools.extract.quantize import quantize_flow
    cv2.setNumThreads(2)
    opencv = OpenCVFlow("tvl1")
    clips = sorted(p.name for p in VIDEOS.iterdir())
    assert len(clips) >= 6
    for name in clips:
        pairs = gray_pairs(name, 2, size=None, every=9)
        ours = backend.compute_batch_quantized(pairs, 20.0)
        for k, ((a, b), q) in enumerate(zip(pairs, ours)):
            flow = opencv.compute(a, b)
            reference = np.stack([quantize_flow(flow[..., c], 20.0) for c in (0, 1)], axis=-1)
            within = float((np.abs(q.astype(int) - reference.astype(int)) <= 1).mean())
            print(f"{name} pair {k} ({a.shape[1]}x{a.shape[0]}): {100 * within:.2f} % within one level")
            assert within >= 0.995, f"{name} pair {k}: {100 * within:.2f} % within one level"


def test_stopped_pairs_leave_the_batch_and_every_pair_computes_what_it_does_alone(backend):
    """16 real pairs in one batch: the inner iterations computed stay within 1.15x of the sum
    of the pairs' own counts (full-resolution equivalents), with the host reading the mask
    at once (the CPU) and MASK_LAG["cuda"] iterations late (what a GPU does); every flow is
    bitwise the flow of that pair computed alone."""
    from collections import Counter

    from datatools.extract.backends import tvl1_solver
    pairs = [p for name in ("test.mp4", "bikes.mp4", "test.avi", "demo.mp4")
             for p in gray_pairs(name, 4, every=7)]
    assert len(pairs) == 16
    i0 = torch.from_numpy(np.stack([a for a, _ in pairs])).float()
    i1 = torch.from_numpy(np.stack([b for _, b in pairs])).float()
    results = {}
    for lag in (0, tvl1_solver.MASK_LAG["cuda"]):
        stats: Counter = Counter()
        u1, u2 = tvl1_solver.tvl1(i0, i1, lag=lag, stats=stats)
        results[lag] = torch.stack([u1, u2], dim=-1).numpy()
        ratio, lockstep = stats["computed"] / stats["own"], stats["lockstep"] / stats["own"]
        print(f"lag {lag}: computed {stats['computed']:.0f}, own {stats['own']:.0f}, lockstep "
              f"{stats['lockstep']:.0f} inner iterations ({ratio:.3f}x own; lockstep {lockstep:.2f}x)")
        assert stats["own"] > 16 * 100  # every pair iterated (a full-resolution pyramid)
        assert stats["computed"] <= 1.15 * stats["own"]
        assert stats["lockstep"] > stats["computed"]
    alone = [backend.compute(a, b) for a, b in pairs]
    for k, flow in enumerate(alone):
        for lag, batch in results.items():
            assert np.array_equal(flow, batch[k]), f"pair {k} differs from alone (lag {lag})"


def _one_pair_as_opencv_loops(i0, i1, p, steps):
    """The reference: one pair, OpenCV's loop structure (tvl1flow.cpp procOneScale) written
    out plainly, no batch, no compaction, the host looking at the error after every step."""
    from datatools.extract.backends import tvl1_kernels as K
    from datatools.extract.backends import tvl1_solver as S
    inner_step, median = steps
    levels = [(i0, i1)]
    while len(levels) < p.scales:
        h, w = levels[-1][0].shape[-2:]
        nh, nw = S._cv_round(h * p.scale_step), S._cv_round(w * p.scale_step)
        if nh < 16 or nw < 16:
            break
        levels.append(tuple(S._resize_by(t, nh, nw, p.scale_step) for t in levels[-1]))
    u1 = u2 = torch.zeros_like(levels[-1][0])
    for s in range(len(levels) - 1, -1, -1):
        a, b = levels[s]
        h, w = a.shape[-2:]
        if u1.shape[-2:] != (h, w):
            u1, u2 = (S._resize_to(u, h, w) * (1.0 / p.scale_step) for u in (u1, u2))
        threshold = torch.tensor(int(p.epsilon ** 2 * h * w * K.FIXED_POINT))
        bx, by = S._centered_gradient(b)
        duals = [torch.zeros_like(a) for _ in range(4)]
        ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
        for _ in range(p.warps):
            x, y = xs + u1, ys + u2
            bw, bwx, bwy = (S._sample(t, x, y, "bicubic", "zeros") for t in (b, bx, by))
            grad = bwx * bwx + bwy * bwy
            rho_c = bw - bwx * u1 - bwy * u2 - a
            going = torch.ones(1, dtype=torch.bool)
            for _ in range(p.outer):
                if not going:
                    break
                u1, u2 = median(u1, p.median), median(u2, p.median)
                count = torch.zeros(1, dtype=torch.int32)
                going = torch.ones(1, dtype=torch.bool)
                for _ in range(p.inner):
                    u1, u2, *duals, going, count = inner_step(
                        u1, u2, *duals, bwx, bwy, grad, rho_c, going, count, threshold,
                        p.lambda_ * p.theta, p.theta, p.tau / p.theta)
                    if not going:
                        break
    return torch.stack([u1, u2], dim=-1)[0].numpy()


def test_the_batched_solver_computes_opencvs_loops_pair_by_pair():
    """Compaction against the loops it replaces: 8 real pairs (64x48) through the solver, with
    the host's view of the mask at once and MASK_LAG["cuda"] late, equal bitwise the same
    steps run one pair at a time in OpenCV's loop structure."""
    from datatools.extract.backends import tvl1_kernels, tvl1_solver
    from datatools.extract.tvl1 import TVL1
    steps = tvl1_kernels.eager()
    pairs = [p for name in ("test.mp4", "bikes.mp4", "test.avi", "demo.mp4")
             for p in gray_pairs(name, 2, size=(64, 48), every=5)]
    i0 = torch.from_numpy(np.stack([a for a, _ in pairs])).float()
    i1 = torch.from_numpy(np.stack([b for _, b in pairs])).float()
    expected = [_one_pair_as_opencv_loops(i0[k:k + 1], i1[k:k + 1], TVL1, steps) for k in range(len(pairs))]
    for lag in (0, tvl1_solver.MASK_LAG["cuda"]):
        u1, u2 = tvl1_solver.tvl1(i0, i1, steps=steps, lag=lag)
        flows = torch.stack([u1, u2], dim=-1).numpy()
        for k, want in enumerate(expected):
            assert np.array_equal(flows[k], want), f"pair {k}, lag {lag}"


def test_the_median_network_is_the_5x5_median_with_replicated_borders():
    from datatools.extract.backends.tvl1_kernels import median, median_network
    assert len(median_network(25)) < 120  # pruned: the full odd-even merge sort has more
    u = torch.randn(3, 17, 23)
    u[0, 4:9, 4:9] = 1.5  # ties
    padded = torch.nn.functional.pad(u[:, None], (2, 2, 2, 2), mode="replicate")
    windows = padded.unfold(2, 5, 1).unfold(3, 5, 1).reshape(3, 1, 17, 23, 25)
    assert torch.equal(median(u, 5), windows.median(dim=-1).values[:, 0])


def test_extract_with_the_torch_backend_writes_every_pair(tmp_path):
    root = ucf101_style_root(tmp_path / "root", {"Real/v_Real_g01_c01.mp4": str(VIDEOS / "short_32f.mp4")})
    build_lists("ucf101", root)
    result = extract(root, ExtractOptions(task="flow", backend="torch", new_short=64),
                     cluster=ClusterOptions(workers=2))
    (rec, outcome), = result.outcomes
    assert outcome.status == "done" and outcome.flow_count == 31
    folder = root / "rawframes/Real/v_Real_g01_c01"
    assert len(list(folder.glob("flow_x_*.jpg"))) == 31 and (folder / "flow_y_00031.jpg").is_file()


@pytest.mark.slow
def test_videos_run_together_share_batches_and_write_what_they_write_alone(tmp_path):
    """A worker running three videos at once (as a GPU worker does) batches their pairs
    together; every flow file equals the one written when the videos run one at a time."""
    from distributed import Client, LocalCluster

    from datatools.extract.batcher import batch_stats
    files = {f"Real/v_Real_g0{i}_c01.mp4": str(VIDEOS / "short_32f.mp4") for i in (1, 2, 3)}
    opts = ExtractOptions(task="flow", backend="torch", new_short=48)
    alone = ucf101_style_root(tmp_path / "alone", files)
    build_lists("ucf101", alone)
    assert extract(alone, opts, cluster=ClusterOptions(workers=1)).counts == {"done": 3}
    together = ucf101_style_root(tmp_path / "together", files)
    build_lists("ucf101", together)
    with LocalCluster(n_workers=1, threads_per_worker=3, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        result = extract(together, opts, cluster=ClusterOptions(scheduler=cluster.scheduler_address))
        (stats,) = client.run(batch_stats).values()
    assert result.counts == {"done": 3}
    assert stats["pairs"] == 93 and stats["mixed_batches"] >= 1, stats
    a, b = tree_bytes(alone / "rawframes"), tree_bytes(together / "rawframes")
    assert len([k for k in a if "/flow_" in k]) == 2 * 93
    assert {k: v for k, v in a.items() if "/flow_" in k} == {k: v for k, v in b.items() if "/flow_" in k}


def test_a_batch_the_device_cannot_hold_is_halved_until_it_fits(backend):
    """Free memory can shrink between batch_size() and the computation (another process on
    the GPU): the batcher splits the batch instead of failing the videos. The CPU has no
    memory limit to hit, so the device's out-of-memory error is raised for batches over 2."""
    from datatools.extract.batcher import PairBatcher

    class SmallDevice:
        def __init__(self, real):
            self.real = real

        def batch_size(self, width, height):
            return 8

        def upload(self, pairs):
            return self.real.upload(pairs)

        def start(self, staged, bound):
            if len(staged) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.real.start(staged, bound)

    pairs = gray_pairs("short_32f.mp4", 6, size=(64, 48))
    batcher = PairBatcher(SmallDevice(backend), 20.0)
    futures = [batcher.submit(a, b, "video") for a, b in pairs]
    flows = [f.result(timeout=120) for f in futures]
    expected = backend.compute_batch_quantized(pairs, 20.0)
    assert all(np.array_equal(x, y) for x, y in zip(flows, expected))
    assert batcher.stats["splits"] >= 1 and batcher.stats["pairs"] == 6


def test_a_device_error_while_sizing_a_batch_fails_the_pairs_instead_of_hanging(backend):
    from datatools.extract.batcher import PairBatcher

    class LostDevice:
        def batch_size(self, width, height):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    pairs = gray_pairs("short_32f.mp4", 3, size=(64, 48))
    batcher = PairBatcher(LostDevice(), 20.0)
    futures = [batcher.submit(a, b, "video") for a, b in pairs]
    for fut in futures:
        with pytest.raises(RuntimeError, match="illegal memory access"):
            fut.result(timeout=30)


def test_flow_quantized_on_the_device_equals_the_host_rule(backend):
    from datatools.extract.quantize import quantize_flow
    pairs = gray_pairs("short_32f.mp4", 2)
    floats = backend.compute_batch(pairs)
    quantized = backend.compute_batch_quantized(pairs, 20.0)
    for f, q in zip(floats, quantized):
        assert q.dtype == np.uint8
        assert np.array_equal(q[..., 0], quantize_flow(f[..., 0], 20.0))
        assert np.array_equal(q[..., 1], quantize_flow(f[..., 1], 20.0))
    edges = torch.tensor([-25.0, -20.0, 0.0, 20.0 * (1 / 255), 25.0])  # clip, 0 -> 128, half-even
    from datatools.extract.backends.torch_flow import quantize
    assert quantize(edges, 20.0).tolist() == quantize_flow(edges.numpy(), 20.0).tolist()
