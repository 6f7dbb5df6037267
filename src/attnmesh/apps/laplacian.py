"""Laplacian mesh editing (Sorkine et al., "Laplacian Surface Editing", 2004) on triangle meshes such as the
canonical face (468 vertices, 898 triangles).

The differential coordinates of a mesh are ``delta = L @ V`` with ``L`` a discrete Laplacian (each vertex minus
a weighted average of its neighbours). :func:`laplacian_morph` moves a set of *anchor* vertices to new
positions and places every other vertex so that the differential coordinates change as little as possible,
in the least-squares sense::

    minimise  || L X - L V ||^2  +  weight^2 * sum_a || X[a] - P[a] ||^2

It is one sparse symmetric positive-definite system (``L^T L + weight^2 S^T S``), factorised once and solved
for x, y and z. ``weight`` large (default 1e3) makes the anchors (nearly) hard constraints; small values make
them soft, so noisy anchors are fitted loosely while the mesh keeps its local shape. The differential
coordinates are not rotation invariant: this suits small and moderate edits (identity morphs, expressions),
not large rotations of parts of the mesh.

Used for identity normalisation (morph the canonical face into a user's neutral face,
:func:`attnmesh.apps.blendshapes.neutral_from_landmarks`), for the random identities of the synthetic
training and test faces, and to spread the hand-placed handle displacements of the blendshapes over the mesh.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def edges_of(triangles: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2), sorted, of a triangle list (T, 3)."""
    t = np.asarray(triangles, np.int64)
    e = np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0)


def uniform_laplacian(num_vertices: int, triangles: np.ndarray) -> sp.csr_matrix:
    """Graph Laplacian ``L = I - D^-1 A`` (each vertex minus the mean of its mesh neighbours)."""
    e = edges_of(triangles)
    a = sp.coo_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])),
                      shape=(num_vertices, num_vertices)).tocsr()
    deg = np.asarray(a.sum(1)).ravel()
    deg[deg == 0] = 1.0
    return (sp.identity(num_vertices, format="csr") - sp.diags(1.0 / deg) @ a).tocsr()


def cotangent_laplacian(vertices: np.ndarray, triangles: np.ndarray) -> sp.csr_matrix:
    """Cotangent Laplacian, row-normalised: ``(L V)_i = V_i - sum_j w_ij V_j / sum_j w_ij`` with
    ``w_ij = (cot a_ij + cot b_ij) / 2`` (the angles opposite edge ij). Negative weights of obtuse triangles
    are clamped to a small positive value so the rows stay convex combinations (robust on this mesh, whose
    triangles near the eyes and lips are thin)."""
    v = np.asarray(vertices, np.float64)
    t = np.asarray(triangles, np.int64)
    n = len(v)
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, o = t[:, k], t[:, (k + 1) % 3], t[:, (k + 2) % 3]
        u, w = v[i] - v[o], v[j] - v[o]
        cross = np.linalg.norm(np.cross(u, w), axis=1)
        cot = (u * w).sum(1) / np.maximum(cross, 1e-12)
        rows += [i, j]
        cols += [j, i]
        vals += [0.5 * cot, 0.5 * cot]
    w = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    w.data = np.maximum(w.data, 1e-3)
    deg = np.asarray(w.sum(1)).ravel()
    deg[deg == 0] = 1.0
    return (sp.identity(n, format="csr") - sp.diags(1.0 / deg) @ w).tocsr()


def laplacian_matrix(vertices: np.ndarray, triangles: np.ndarray, kind: str = "cotangent") -> sp.csr_matrix:
    if kind == "cotangent":
        return cotangent_laplacian(vertices, triangles)
    if kind == "uniform":
        return uniform_laplacian(len(vertices), triangles)
    raise ValueError(f"kind must be 'cotangent' or 'uniform', got {kind!r}")


class LaplacianEditor:
    """A factorised Laplacian editing system for a fixed mesh, anchor set and weight: :meth:`solve` moves the
    anchors to any positions (one back-substitution per call)."""

    def __init__(self, base_vertices: np.ndarray, triangles: np.ndarray, anchor_ids: np.ndarray,
                 weight: float | np.ndarray = 1e3, kind: str = "cotangent") -> None:
        self.base = np.asarray(base_vertices, np.float64)
        if self.base.ndim != 2:
            raise ValueError(f"base_vertices must be (N, D), got {self.base.shape}")
        n = len(self.base)
        self.anchor_ids = np.asarray(anchor_ids, np.int64).ravel()
        if len(self.anchor_ids) == 0:
            raise ValueError("at least one anchor is needed")
        if self.anchor_ids.min() < 0 or self.anchor_ids.max() >= n:
            raise ValueError("anchor ids out of range")
        w = np.broadcast_to(np.asarray(weight, np.float64), self.anchor_ids.shape)
        if not (w > 0).all():
            raise ValueError("weights must be positive")
        self.laplacian = laplacian_matrix(self.base, triangles, kind)
        self.delta = self.laplacian @ self.base
        s = sp.coo_matrix((w, (np.arange(len(w)), self.anchor_ids)), shape=(len(w), n)).tocsr()
        self._s = s
        self._w = w
        system = (self.laplacian.T @ self.laplacian + s.T @ s).tocsc()
        self._lu = spla.splu(system)
        self._rhs0 = self.laplacian.T @ self.delta

    def solve(self, anchor_positions: np.ndarray) -> np.ndarray:
        p = np.asarray(anchor_positions, np.float64)
        if p.shape != (len(self.anchor_ids), self.base.shape[1]):
            raise ValueError(f"anchor_positions must be {(len(self.anchor_ids), self.base.shape[1])}, got {p.shape}")
        rhs = self._rhs0 + self._s.T @ (self._w[:, None] * p)
        return self._lu.solve(rhs)


def laplacian_morph(base_vertices: np.ndarray, triangles: np.ndarray, anchor_ids: np.ndarray,
                    anchor_positions: np.ndarray, weight: float | np.ndarray = 1e3,
                    kind: str = "cotangent") -> np.ndarray:
    """The mesh ``base_vertices`` (N, 3) deformed so that vertices ``anchor_ids`` (A,) move to
    ``anchor_positions`` (A, 3) while the differential coordinates (local shape) of the rest are kept as well
    as possible: the least-squares solution of ``[L; weight·S] X = [L·V; weight·P]``. ``weight``: scalar or
    (A,) per anchor; ``kind``: ``"cotangent"`` (default) or ``"uniform"`` Laplacian. Returns (N, 3) float64.
    """
    return LaplacianEditor(base_vertices, triangles, anchor_ids, weight, kind).solve(anchor_positions)


def differential_change(before: np.ndarray, after: np.ndarray, triangles: np.ndarray,
                        kind: str = "cotangent") -> np.ndarray:
    """Per-vertex norm of the change of differential coordinates ``|L(after) - L(before)|`` (L from
    ``before``): how much the local shape changed, independent of translations."""
    lap = laplacian_matrix(before, triangles, kind)
    return np.linalg.norm(lap @ (np.asarray(after) - np.asarray(before)), axis=1)


@functools.lru_cache(maxsize=1)
def canonical_editing_mesh() -> tuple[np.ndarray, np.ndarray]:
    """The canonical face's (468, 3) vertices and its triangles, read-only."""
    from ..geometry.face_geometry import load_canonical_face

    face = load_canonical_face()
    return face.vertices, face.triangles
