"""matplotlib, headless, for every picture zsclip writes (imported only by the functions that draw)."""

from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the Agg backend: no display is needed or touched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """A finished matplotlib figure as PNG bytes (the figure is closed)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    return buf.getvalue()
