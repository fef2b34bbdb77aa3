"""The DAM as a heat map: layers (rows) x module kinds (columns), kept cells outlined."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .dam import DAM  # noqa: E402


def plot_dam(dam: DAM, path: str, title: str | None = None) -> str:
    values = np.array([[np.nan if v is None else v for v in row] for row in dam.matrix()], dtype=float)
    kept = dam.kept_mask()
    n_layers, n_kinds = values.shape
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 + 0.9 * n_kinds), max(2.5, 1.2 + 0.32 * n_layers)))
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for row in range(n_layers):
        for col in range(n_kinds):
            if n_layers * n_kinds <= 256 and not np.isnan(values[row, col]):  # readable only on small grids
                ax.text(col, row, f"{values[row, col]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if values[row, col] > 0.6 else "white")
            if kept[row][col]:
                # inset, so that two kept neighbours do not seem to outline the cell between them
                ax.add_patch(Rectangle((col - 0.44, row - 0.44), 0.88, 0.88, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(n_kinds), [k.removesuffix("_proj") for k in dam.kinds])
    ax.set_yticks(range(n_layers), [str(layer) for layer in dam.layers])
    ax.set_xlabel("module")
    ax.set_ylabel("layer")
    ax.set_title(title or f"DAM ({dam.method}): {len(dam.kept)} of {len(dam.candidates)} kept (red)", fontsize=9)
    fig.colorbar(image, ax=ax, label="architecture weight")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
