"""Configuration dataclasses: validated on construction, round-tripped through artifact manifests.

CLI flags default to None and fall back to these defaults, so each default lives here only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import VQ4AllError
from .subvectors import GRANULARITIES

BANDWIDTH_RULES = ("scott", "silverman")
CODEBOOK_DTYPES = ("int8", "float16")
MAX_K = 1 << 16  # codes are stored as U16 at most


def check_k(k: int) -> int:
    """k must be a power of two in 2..65536: codes are log2(k)-bit indices stored as U8/U16."""
    k = int(k)
    if k < 2 or k > MAX_K or k & (k - 1):
        raise VQ4AllError(f"k={k} must be a power of two between 2 and {MAX_K} (e.g. --k 65536 or --k 256)")
    return k


@dataclass(frozen=True)
class CodebookConfig:
    """How the universal codebook is built (METHOD.md steps 1-3).

    networks: source networks, pooled with equal counts (`per_network` sub-vectors each, drawn
    with replacement only where a network has fewer). bandwidth: "scott", "silverman" or a
    positive number (a fixed h, in units of the normalised weights). lloyd_iters: optional Lloyd
    refinement of the sampled codewords over the pooled sub-vectors (0 = pure KDE sample).
    """

    networks: tuple[str, ...] = ()
    k: int = MAX_K
    d: int = 8
    per_network: int = 1 << 18
    bandwidth: str | float = "scott"
    dtype: str = "int8"
    scale_granularity: str = "channel"
    lloyd_iters: int = 0
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "networks", tuple(self.networks))
        check_k(self.k)
        if not 1 <= int(self.d) <= 64:
            raise VQ4AllError(f"d={self.d} must be between 1 and 64 (the default is 8)")
        if int(self.per_network) < 1:
            raise VQ4AllError(f"per_network={self.per_network} must be >= 1")
        bw = self.bandwidth
        if isinstance(bw, str) and bw not in BANDWIDTH_RULES:
            try:
                bw = float(bw)
            except ValueError:
                raise VQ4AllError(f"bandwidth '{bw}' must be scott, silverman or a positive number") from None
        if not isinstance(bw, str) and not (float(bw) > 0 and float(bw) < float("inf")):
            raise VQ4AllError(f"bandwidth {bw} must be a positive finite number")
        object.__setattr__(self, "bandwidth", bw)
        if self.dtype not in CODEBOOK_DTYPES:
            raise VQ4AllError(f"codebook dtype '{self.dtype}' must be one of {', '.join(CODEBOOK_DTYPES)}")
        if self.scale_granularity not in GRANULARITIES:
            raise VQ4AllError(f"scale granularity '{self.scale_granularity}' must be one of {', '.join(GRANULARITIES)}")
        if int(self.lloyd_iters) < 0:
            raise VQ4AllError(f"lloyd_iters={self.lloyd_iters} must be >= 0")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["networks"] = list(self.networks)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "CodebookConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})
