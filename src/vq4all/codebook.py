"""The universal codebook by kernel density estimation (METHOD.md steps 1-3).

1. Pool: from each source network, `per_network` normalised sub-vectors (only those holding no
   row padding), drawn uniformly without replacement, or with replacement where a network has
   fewer, so every network weighs the same.
2. KDE: an isotropic Gaussian kernel of bandwidth h; h by Scott's rule n^(-1/(d+4)) * sigma or
   Silverman's (4/(d+2))^(1/(d+4)) * n^(-1/(d+4)) * sigma, sigma = the mean per-dimension std of
   the pool, or a fixed h. A codeword = a pooled sub-vector drawn at random + h * N(0, I_d).
   Optionally a few Lloyd iterations move the codewords to the means of their pooled members.
3. Quantize once to the ROM's precision: int8 with one global scale = max|codeword| / 127
   (symmetric, -127..127), or float16. Everything downstream uses exactly those stored values.

Deterministic: numpy's PCG64 seeded with `seed`, networks pooled in the order given.
"""

from __future__ import annotations

import numpy as np

from .artifact import Codebook
from .config import CodebookConfig
from .errors import VQ4AllError
from .kmeans import lloyd


def pool(subvectors_by_network: dict[str, np.ndarray], per_network: int, rng: np.random.Generator) -> np.ndarray:
    """Equal pooling: [len(networks) * per_network, d] float32 from {name: [N_i, d] float32}."""
    parts = []
    for name, subvectors in subvectors_by_network.items():
        n = subvectors.shape[0]
        if n == 0:
            raise VQ4AllError(f"network '{name}' has no full sub-vectors to pool")
        replace = n < per_network
        parts.append(subvectors[rng.choice(n, size=per_network, replace=replace)])
    return np.concatenate(parts).astype(np.float32)


def bandwidth(pooled: np.ndarray, rule) -> float:
    """KDE bandwidth h for the pooled sub-vectors [n, d] by rule 'scott', 'silverman' or a number."""
    n, d = pooled.shape
    sigma = float(pooled.astype(np.float64).std(axis=0, ddof=1).mean())
    if rule == "scott":
        return sigma * n ** (-1.0 / (d + 4))
    if rule == "silverman":
        return sigma * (4.0 / (d + 2)) ** (1.0 / (d + 4)) * n ** (-1.0 / (d + 4))
    return float(rule)


def quantize(codewords: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Store the codewords at ROM precision: (codebook [k, d] int8|float16, codebook_scale [1] float32|None)."""
    if dtype == "float16":
        return codewords.astype(np.float16), None
    peak = float(np.abs(codewords).max())
    scale = np.float32(peak / 127.0 if peak > 0 else 1.0)
    q = np.clip(np.rint(codewords / scale), -127, 127).astype(np.int8)
    return q, np.array([scale], dtype=np.float32)


def build_from_subvectors(
    subvectors_by_network: dict[str, np.ndarray], config: CodebookConfig, progress: bool = False
) -> Codebook:
    """The universal codebook from already-extracted sub-vectors ({name: [N_i, d] float32})."""
    for name, subvectors in subvectors_by_network.items():
        if subvectors.ndim != 2 or subvectors.shape[1] != config.d:
            raise VQ4AllError(f"network '{name}': sub-vectors must be [N, d={config.d}], got {subvectors.shape}")
    rng = np.random.Generator(np.random.PCG64(config.seed))
    pooled = pool(subvectors_by_network, config.per_network, rng)
    h = bandwidth(pooled, config.bandwidth)
    picks = rng.integers(0, pooled.shape[0], size=config.k)
    codewords = (pooled[picks].astype(np.float64) + h * rng.standard_normal((config.k, config.d))).astype(np.float32)
    if config.lloyd_iters:
        codewords = lloyd(codewords, pooled, config.lloyd_iters, progress=progress)
    codebook, codebook_scale = quantize(codewords, config.dtype)
    manifest = {
        "config": config.to_dict(),
        "bandwidth_h": h,
        "pooled_subvectors": int(pooled.shape[0]),
        "sources": {name: int(s.shape[0]) for name, s in subvectors_by_network.items()},
    }
    return Codebook(codebook, codebook_scale, manifest)


def network_subvectors(weights: dict, d: int, granularity: str) -> np.ndarray:
    """All full (unpadded) normalised sub-vectors of one network: [N, d] float32.

    weights: {state-dict key: tensor or array [out_features, ...]}."""
    from .subvectors import split

    parts = [
        split(np.asarray(w, dtype=np.float32), d, granularity, name=f"weight '{key}'").full()
        for key, w in weights.items()
    ]
    parts = [p for p in parts if p.size]
    return np.concatenate(parts) if parts else np.zeros((0, d), np.float32)


def build(config: CodebookConfig, networks: dict, progress: bool = False) -> Codebook:
    """The universal codebook from the source networks named in `config.networks`.

    networks: {name: vq4all.network.Network} holding at least those names (e.g. zoo.load(name)
    for each, or a user's own networks): their compressible weights are pooled."""
    if not config.networks:
        raise VQ4AllError("no source networks: name at least one (e.g. --networks digits_cnn,mtcnn_onet)")
    missing = [name for name in config.networks if name not in networks]
    if missing:
        raise VQ4AllError(f"source network '{missing[0]}' of the config was not given")
    subvectors = {}
    names = config.networks
    if progress:
        from tqdm import tqdm

        names = tqdm(names, desc="sub-vectors", unit="net", leave=False)
    for name in names:
        subvectors[name] = network_subvectors(networks[name].compressible(config.d), config.d, config.scale_granularity)
    return build_from_subvectors(subvectors, config, progress=progress)
