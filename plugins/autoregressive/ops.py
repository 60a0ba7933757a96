"""Torch code of the AR poison: the class processes' coefficients, the vectorised generator and the finder.

A process k has coefficients b[k] ∈ R^{C×3×3} (row-major over the window of two rows above, one
row above and the current row × two columns left, one left and the current column; the current
pixel's weight [2][2] is 0 and each channel's nine weights sum to 1). A realisation starts from
N(0, 1) noise on an (H + crop) × (W + crop) field and overwrites every pixel (r, t) with r, t ≥ 2
in raster order by Σ b[k][c][u][v]·s[c][r−2+u][t−2+v] — each channel by its own weights.
``generate`` computes that recurrence a row at a time for all images at once (no Python loop
per pixel): see its docstring.
"""

from __future__ import annotations

import functools

import torch

from poisonbench.errors import BadInput, RunFailed

# CIFAR-10 processes (K = 10, C = 3), channel order R, G, B: the 8 weights of each channel before
# the implicit current-pixel 0, row-major; the authors' released 10-class parameters to float32.
CIFAR10_COEFFICIENTS = (
    ((0.1561, -0.0710, 0.3743, -0.1896, 0.0461, 0.6075, 0.0539, 0.0226),
     (-0.1016, 0.2193, 0.0472, 0.1401, 0.1561, 0.1171, 0.1742, 0.2476),
     (-0.1100, 0.2703, -0.0026, 0.2662, -0.1185, 0.0846, 0.1812, 0.4287)),
    ((0.2346, 0.2056, -0.0480, 0.4110, 0.7504, 0.1326, -0.1044, -0.5817),
     (-0.0308, -0.1085, 0.3997, 0.2187, 0.1830, 0.3389, -0.1017, 0.1008),
     (0.1246, 0.1667, -0.1518, 0.2985, 0.1346, 0.3185, 0.3805, -0.2716)),
    ((0.0951, 0.5501, 0.0344, -0.3431, 0.0767, 0.2239, 0.4602, -0.0972),
     (0.1714, 0.1121, 0.1129, 0.3032, 0.2959, 0.0861, 0.2207, -0.3021),
     (0.2720, -0.3417, 0.2115, 0.2499, 0.3690, 0.3833, -0.0282, -0.1158)),
    ((-0.4241, -0.2694, 0.4091, 0.3998, 0.1572, 0.2683, 0.2700, 0.1892),
     (0.1246, 0.3024, 0.2110, 0.0538, 0.1997, 0.3283, 0.0372, -0.2570),
     (0.2038, 0.3972, -0.1963, 0.3460, -0.6439, 0.7153, -0.2826, 0.4605)),
    ((0.7873, -0.1756, -0.3509, 0.0763, 0.2261, -0.2704, 0.2491, 0.4581),
     (0.1287, -0.1655, 0.2488, 0.3811, -0.2307, 0.3019, -0.0076, 0.3433),
     (0.4227, 0.0690, 0.2492, 0.0896, 0.0653, -0.1653, -0.2349, 0.5043)),
    ((0.1585, 0.2663, 0.1764, 0.0031, -0.0237, 0.3464, 0.0140, 0.0590),
     (0.1632, 0.5094, 0.0321, 0.3935, -0.1807, 0.2110, -0.3620, 0.2334),
     (-0.2474, 0.1092, 0.3928, 0.2808, 0.3912, 0.1211, -0.0635, 0.0159)),
    ((0.8886, -0.2459, -0.4169, -0.4120, -0.1282, 0.6105, 0.2495, 0.4546),
     (0.0679, -0.2982, 0.1039, 0.1430, 0.1596, 0.6743, -0.2002, 0.3496),
     (-0.2195, 0.2183, -0.2665, 0.3373, 0.1907, 0.5847, 0.1977, -0.0427)),
    ((-0.3829, 0.0158, 0.4019, -0.0688, 0.1206, 0.2481, 0.1416, 0.5238),
     (-0.2271, 0.1683, 0.3593, 0.2671, -0.1225, 0.0217, 0.0266, 0.5066),
     (0.8539, 0.3682, 0.2899, 0.6635, 0.0130, -0.7025, -0.1377, -0.3483)),
    ((0.4482, 0.2220, 0.0598, 0.3965, -0.1148, 0.1683, -0.3444, 0.1644),
     (-0.1463, 0.6120, 0.2203, 0.4039, -0.2832, -0.1290, 0.3369, -0.0146),
     (0.3759, 0.2814, 0.1494, 0.1925, 0.0552, 0.1091, -0.0962, -0.0673)),
    ((0.3556, 0.3477, -0.6625, 0.1812, 0.2997, -0.2139, 0.5538, 0.1385),
     (-0.0297, 0.0780, 0.2486, 0.2246, 0.1931, 0.1349, 0.0079, 0.1426),
     (0.2461, 0.1217, 0.1879, -0.0165, 0.1160, 0.1356, 0.1772, 0.0321)),
)
FINDER_SIZE, FINDER_CROP, FINDER_TRIALS = 32, 4, 3  # the authors' finder: 36×36 fields cropped to 32×32
FINDER_BATCH = 64  # candidates drawn and generated at once (fixed: part of the seeded stream)
MAX_COEFFICIENT, MAX_RAW_NORM = 10.0, 50.0  # reject diverging processes (one released 100-class file had 2·10⁷)


def cifar10_coefficients() -> torch.Tensor:
    """(10, 3, 3, 3) float32 CIFAR-10 processes with the current-pixel weight 0."""
    table = torch.tensor(CIFAR10_COEFFICIENTS, dtype=torch.float32)
    return torch.cat([table, torch.zeros(10, 3, 1)], dim=2).reshape(10, 3, 3, 3)


def row_inverse(coeffs: torch.Tensor, width: int) -> torch.Tensor:
    """(K, C, W−2, W−2) inverse of each process's in-row recursion s[t] = a₁·s[t−1] + a₂·s[t−2] + g[t]
    (a₁, a₂ = the weights of one and two pixels to the left), computed in float64."""
    num, channels = coeffs.shape[:2]
    n = width - 2
    lower = torch.eye(n, dtype=torch.float64).repeat(num, channels, 1, 1)
    for lag, (u, v) in ((1, (2, 1)), (2, (2, 0))):
        idx = torch.arange(lag, n)
        lower[:, :, idx, idx - lag] = -coeffs[:, :, u, v].double().unsqueeze(-1)
    eye = torch.eye(n, dtype=torch.float64).expand(num, channels, n, n)
    return torch.linalg.solve_triangular(lower, eye, upper=False).float()


ABOVE = [(u, v) for u in range(2) for v in range(3)]  # weights on the two rows above
MAX_SEGMENTS = 16  # above this many classes in one batch, solve rows with per-image inverses


def generate(coeffs: torch.Tensor, labels: torch.Tensor, *, size: tuple[int, int], crop: int,
             gen: torch.Generator) -> torch.Tensor:
    """Unscaled realisations (B, C, H, W) float32: image i runs process ``coeffs[labels[i]]`` (K, C, 3, 3).

    Row by row, all images at once: the two rows above enter as six shifted multiply-adds; the
    same row's two left neighbours make a linear recursion along the row, solved with the class's
    precomputed triangular inverse (one small matmul per class and row). Equal to the raster-order
    recurrence up to float32 rounding (~1e-6 relative), in H + crop − 2 vectorised row steps.
    """
    batch, channels = labels.shape[0], coeffs.shape[1]
    height, width = size[0] + crop, size[1] + crop
    n = width - 2
    noise = torch.randn(batch, channels, height, width, generator=gen)  # image order: chunk-independent
    order = torch.argsort(labels, stable=True)  # group each class's images for its matmul
    field, sorted_labels = noise[order], labels[order]
    inverse = row_inverse(coeffs, width)
    w = coeffs[sorted_labels]  # (B, C, 3, 3)
    left1, left2 = w[:, :, 2, 1], w[:, :, 2, 0]
    classes, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    ends = torch.cumsum(counts, 0)
    segments = list(zip(classes.tolist(), (ends - counts).tolist(), ends.tolist(), strict=True))
    # few images per class (the finder: 3 per candidate): one batched matmul beats many small ones
    per_image = inverse[sorted_labels] if len(segments) > MAX_SEGMENTS else None
    for r in range(2, height):
        g = torch.zeros(batch, channels, n)
        for u, v in ABOVE:
            g += w[:, :, u, v, None] * field[:, :, r - 2 + u, v:v + n]
        g[:, :, 0] += left2 * field[:, :, r, 0] + left1 * field[:, :, r, 1]  # the fixed first two columns
        if n > 1:
            g[:, :, 1] += left2 * field[:, :, r, 1]
        if per_image is not None:
            field[:, :, r, 2:] = torch.matmul(per_image, g.unsqueeze(-1)).squeeze(-1)
            continue
        for k, lo, hi in segments:
            field[lo:hi, :, r, 2:] = torch.einsum("ncw,cvw->ncv", g[lo:hi], inverse[k])
    out = torch.empty_like(field)
    out[order] = field
    return out[:, :, crop:, crop:]


def scale_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Each realisation rescaled to Frobenius (L2) norm ``eps``; raises on a non-finite value."""
    norms = delta.flatten(1).norm(dim=1)
    if not bool(torch.isfinite(norms).all()) or bool((norms == 0).any()):
        raise RunFailed("AR: a process diverged (non-finite or zero perturbation); use other coefficients")
    return delta * (eps / norms).view(-1, 1, 1, 1)


def response(filters: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """R(f_j, δ) = Σ ReLU(valid conv of δ (C, H, W) with f_j): (J,) for filters (J, C, 3, 3)."""
    out = torch.nn.functional.conv2d(delta.unsqueeze(0), filters)  # (1, J, H−2, W−2), sums over C
    return out.clamp_min(0).flatten(2).sum(dim=2).squeeze(0)


def _responses(filters: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """``response`` of every filter (J, C, 3, 3) on every field (B, C, H, W): (B, J)."""
    out = torch.nn.functional.conv2d(deltas, filters)
    return out.clamp_min(0).flatten(2).sum(dim=2)


def matched_filters(coeffs: torch.Tensor) -> torch.Tensor:
    """Each process's coefficients with the current-pixel weight −1: zero response on its own field."""
    filters = coeffs.clone()
    filters[:, :, 2, 2] = -1.0
    return filters


@functools.lru_cache(maxsize=16)
def find_coefficients(num_classes: int, channels: int, *, required_response: float, max_candidates: int,
                      seed: int) -> torch.Tensor:
    """K processes for C channels whose fields other processes' matched filters all respond to.

    The authors' finder: candidates b ~ N(0, 1)^{C×3×3}, centre 0, each channel divided by its sum;
    three 32×32 realisations (crop 4) are drawn; a candidate is rejected if any is non-finite, any raw
    norm exceeds 50 or any weight exceeds 10 in magnitude, or if on its last realisation (L2 = 1) some
    accepted process's matched filter responds below ``required_response``. With C = 3 the CIFAR-10
    processes come first (any subset of them already passes), so K ≤ 10 needs no search.
    """
    gen = torch.Generator().manual_seed(seed)
    accepted = list(cifar10_coefficients()) if channels == 3 else []
    tried = 0
    while len(accepted) < num_classes:
        if tried >= max_candidates:
            raise BadInput(f"AR: found only {len(accepted)} of {num_classes} processes for {channels} "
                           f"channel(s) in {max_candidates} candidates; lower required_response or raise "
                           "max_candidates")
        cand = torch.randn(FINDER_BATCH, channels, 3, 3, generator=gen)
        cand[:, :, 2, 2] = 0.0
        cand = cand / cand.sum(dim=(2, 3), keepdim=True)
        owner = torch.arange(FINDER_BATCH).repeat_interleave(FINDER_TRIALS)
        trials = generate(cand, owner, size=(FINDER_SIZE, FINDER_SIZE), crop=FINDER_CROP,
                          gen=gen).view(FINDER_BATCH, FINDER_TRIALS, channels, FINDER_SIZE, FINDER_SIZE)
        raw = trials.flatten(2).norm(dim=2)  # (B, trials)
        last = torch.nan_to_num(trials[:, -1] / raw[:, -1].view(-1, 1, 1, 1))
        before = len(accepted)  # responses to the processes accepted before this batch, all at once
        old = _responses(matched_filters(torch.stack(accepted)), last) if accepted else None
        for i in range(FINDER_BATCH):
            tried += 1
            ok = bool(torch.isfinite(raw[i]).all()) and float(raw[i].max()) <= MAX_RAW_NORM
            ok = ok and float(cand[i].abs().max()) <= MAX_COEFFICIENT and bool((raw[i] > 0).all())
            if ok and old is not None:
                ok = float(old[i].min()) >= required_response
            if ok and len(accepted) > before:
                new = matched_filters(torch.stack(accepted[before:]))
                ok = float(response(new, last[i]).min()) >= required_response
            if ok:
                accepted.append(cand[i])
            if len(accepted) >= num_classes or tried >= max_candidates:
                break
    return torch.stack(accepted[:num_classes])
