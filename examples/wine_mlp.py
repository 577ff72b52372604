"""A network that is not in the zoo: an MLP that tells sklearn's wine samples (13 chemical
measurements each) apart by cultivar (3 classes), trained on that real data in about a second.

    python examples/wine_mlp.py OUT_DIR   # OUT_DIR/wine_mlp.safetensors (weights), wine_x.npy (inputs)

Every vq4all command then takes it as `--model examples/wine_mlp.py:wine_mlp --weights
OUT_DIR/wine_mlp.safetensors --calibration OUT_DIR/wine_x.npy`, and Python code as
`vq4all.compress(wine_mlp(), inputs, codebook, loss="kl")`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


class WineMLP(nn.Module):
    """[N, 13] standardised measurements -> [N, 3] cultivar logits."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(13, 64)
        self.fc2 = nn.Linear(64, 64)
        self.head = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def wine_mlp() -> WineMLP:
    """The architecture (untrained): the factory `--model examples/wine_mlp.py:wine_mlp` calls."""
    return WineMLP()


def wine_data() -> tuple[torch.Tensor, torch.Tensor]:
    """(x [178, 13] float32, standardised per feature; y [178] int64 cultivar) from sklearn."""
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def train(steps: int = 300, seed: int = 0) -> WineMLP:
    """A WineMLP trained on all 178 samples (full-batch Adam, lr 1e-2), eval mode."""
    torch.manual_seed(seed)
    x, y = wine_data()
    model = wine_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def main(out_dir: str) -> None:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = train()
    x, y = wine_data()
    accuracy = float((model(x).argmax(1) == y).float().mean())
    save_file(model.state_dict(), str(out / "wine_mlp.safetensors"))
    np.save(out / "wine_x.npy", x.numpy())
    print(f"wrote {out}/wine_mlp.safetensors and wine_x.npy ({len(x)} inputs); training accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
