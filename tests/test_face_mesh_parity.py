"""Parity of the full pipeline with the reference runtime (``mp.solutions.face_mesh``, MediaPipe 0.10.21)
on real photos, 300-W images and videos. Thresholds are the acceptance criteria of the faithful-inference
issue; the measured numbers are in docs/parity.md (``python benchmarks/parity.py`` prints them)."""

from __future__ import annotations

import numpy as np
import pytest

import attnmesh
from reference import (VIDEOS, ReferenceFaceMesh, match_faces, mean_error_iod, photo_paths,
                       read_rgb, reference_version, video_frames, w300_paths)

STATIC_IMAGES = 300  # 300-W images, on top of every photo
STATIC_TOLERANCE = 0.005  # mean landmark distance / inter-ocular distance
VIDEO_TOLERANCE = 0.01
VIDEO_CLIPS = {"multi-face-640x360.mp4": 5, "talking-d3.mp4": 1, "talking-d11.mp4": 1, "talking-d14.mp4": 2}


def test_reference_runtime_version() -> None:
    assert reference_version().endswith("==0.10.21"), reference_version()


def compare(ours: list[list[np.ndarray]], ref: list[list[np.ndarray]]) -> dict:
    """Per-frame face-count agreement and per-face mean error (fraction of IOD) over matched faces."""
    same_count, errors, unmatched = 0, [], 0
    for o, r in zip(ours, ref):
        same_count += len(o) == len(r)
        pairs = match_faces(o, r)
        unmatched += max(len(o), len(r)) - len(pairs)
        errors += [mean_error_iod(o[i], r[j]) for i, j in pairs]
    errors = np.array(errors)
    return {"frames": len(ref), "count_agreement": same_count / max(1, len(ref)), "faces": len(errors),
            "unmatched": unmatched, "median": float(np.median(errors)) if len(errors) else 0.0,
            "p99": float(np.quantile(errors, 0.99)) if len(errors) else 0.0,
            "max": float(errors.max()) if len(errors) else 0.0, "errors": errors}


@pytest.fixture(scope="module")
def static_images() -> list[np.ndarray]:
    return [read_rgb(p) for p in photo_paths() + w300_paths(STATIC_IMAGES)]


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("refine", [True, False], ids=["refine-478", "mesh-468"])
def test_static_mode_matches_reference(static_images, refine: bool, backend: str) -> None:
    assert len(static_images) >= STATIC_IMAGES + 20
    options = dict(static_image_mode=True, refine_landmarks=refine, max_num_faces=5)
    ref_fm = ReferenceFaceMesh(**options)
    ref = [ref_fm(im) for im in static_images]
    ref_fm.close()
    fm = attnmesh.FaceMesh(**options, backend=backend)
    ours = [[f.landmarks for f in fm.process(im)] for im in static_images]
    n_points = 478 if refine else 468
    assert all(lm.shape == (n_points, 3) for faces in ours for lm in faces)
    s = compare(ours, ref)
    report = {k: v for k, v in s.items() if k != "errors"}
    assert s["faces"] >= STATIC_IMAGES, report
    assert s["count_agreement"] == 1.0, report  # same faces on every image
    assert s["unmatched"] == 0, report
    assert (s["errors"] <= STATIC_TOLERANCE).mean() >= 0.99, report


@pytest.fixture(scope="module")
def video_comparisons() -> dict[str, dict]:
    """Per clip: our video mode against the reference's, frame by frame (478 landmarks)."""
    out = {}
    for clip, max_faces in sorted(VIDEO_CLIPS.items()):
        frames = list(video_frames(VIDEOS / clip))
        assert frames, clip
        options = dict(static_image_mode=False, refine_landmarks=True, max_num_faces=max_faces)
        ref_fm = ReferenceFaceMesh(**options)
        ref = [ref_fm(f) for f in frames]
        ref_fm.close()
        fm = attnmesh.FaceMesh(**options)
        out[clip] = compare([[f.landmarks for f in fm.process(frame)] for frame in frames], ref)
    return out


@pytest.mark.parametrize("clip", sorted(VIDEO_CLIPS))
def test_video_mode_matches_reference_per_clip(video_comparisons, clip: str) -> None:
    s = video_comparisons[clip]
    report = {k: v for k, v in s.items() if k != "errors"}
    assert s["faces"] > 0, report
    assert s["count_agreement"] >= 0.99, report
    assert s["unmatched"] <= 0.01 * s["faces"], report
    # Tracking feeds each frame's landmarks into the next frame's crop, so float differences far below a
    # pixel (our convolutions vs TFLite's) are amplified along the clip: two runs of attnmesh itself with
    # 1 and 2 threads differ by up to ~3% IOD on the small, turning faces of the multi-face clip. Per clip
    # we require the bulk to agree; the acceptance bound (99% within 1% IOD) is checked over all clips.
    # The per-clip share is set at attnmesh's agreement with itself (1 vs 2 threads: 93.6% within 1% IOD on
    # the multi-face clip): it measured 96-100% on AVX2 hosts and 94.8% on an AVX-512 host (other kernels,
    # other summation order), so a higher bound would test the host, not the port.
    assert s["median"] <= 0.25 * VIDEO_TOLERANCE, report
    assert (s["errors"] <= VIDEO_TOLERANCE).mean() >= 0.93, report


def test_video_mode_matches_reference_over_all_clips(video_comparisons) -> None:
    errors = np.concatenate([s["errors"] for s in video_comparisons.values()])
    assert len(errors) >= 500
    assert (errors <= VIDEO_TOLERANCE).mean() >= 0.99, {c: (s["errors"] <= VIDEO_TOLERANCE).mean()
                                                         for c, s in video_comparisons.items()}
