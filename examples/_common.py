"""Shared bits of the analysis examples: the --out / --quick flags and the figure writer."""
from __future__ import annotations

import argparse
import os
import sys

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")


def parse(description: str):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=os.path.normpath(DEFAULT_OUT), help="figure folder (default docs/figures/)")
    ap.add_argument("--quick", action="store_true", help="small sizes, a few seconds (for tests)")
    return ap.parse_args()


def pyplot():
    """matplotlib.pyplot (Agg), or None with a hint when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed, no figure: pip install "jaclab[plots]"', file=sys.stderr)
        return None
    return plt


def save(fig, out: str, name: str) -> str:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure written to {path}")
    return path


def save_png(fig, path: str, dpi: int = 100) -> str:
    """Save at ``dpi`` as a 256-colour palette PNG (a third of the size of matplotlib's RGBA
    PNG; keeps the committed figures small) and close the figure."""
    import io

    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    try:
        from PIL import Image  # a dependency of matplotlib
    except ImportError:
        with open(path, "wb") as fh:
            fh.write(buf.getvalue())
        return path
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=256).save(path, optimize=True)
    return path
