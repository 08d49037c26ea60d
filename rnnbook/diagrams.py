"""Small matplotlib helpers for drawing computation graphs in the chapters.

Coordinates are data units on an axes with equal aspect (see ``canvas``), so a
node of ``size`` 0.8 is 0.8 units wide. Every function draws on the axes it is
given and returns what it created (``canvas`` returns the axes); no state is
kept between calls. Text sizes follow matplotlib's settings: ``font.size`` for the
nodes, one point less for the edge labels, ``axes.titlesize`` for the title. A figure
meant to be legible on a phone enlarges them all at once with
``plt.rc_context({"font.size": 14, "axes.titlesize": 14})``.

    fig, ax = plt.subplots()
    canvas(ax, (0, 4), (0, 2), "an edge")
    a = node(ax, (1, 1), r"$\\mathbf{x}$")
    b = node(ax, (3, 1), r"$\\mathbf{h}$")
    edge(ax, a, b, r"$\\mathbf{W}$")
"""
import matplotlib
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# Fill colours by role, shared by the chapters' figures.
COLORS = {
    "input": "#dbe9f6",    # x_t
    "state": "#fde6c8",    # z_t, h_t, c_t
    "output": "#dff0d8",   # y_t, o_t
    "loss": "#f2dede",     # L_t
    "plain": "white",
}
GRADIENT = "#c0392b"       # colour of backward (gradient) paths


def _size(fontsize, smaller=0):
    """``fontsize``, or matplotlib's current font.size minus ``smaller`` points."""
    return matplotlib.rcParams["font.size"] - smaller if fontsize is None else fontsize


def canvas(ax, xlim, ylim, title=None, fontsize=None):
    """Prepare ``ax`` for a diagram: equal aspect, no axis lines, the given limits and title
    (in ``fontsize`` points, by default axes.titlesize)."""
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, **({} if fontsize is None else {"fontsize": fontsize}))
    return ax


def node(ax, xy, text, role="state", size=(0.8, 0.6), fontsize=None):
    """A rounded box centred at ``xy`` with ``text`` in it, filled by ``role`` (a COLORS key).
    ``fontsize`` defaults to font.size.

    ``size`` is (width, height) in data units. Returns the patch, with two extra
    attributes that ``edge`` uses to start and end arrows on the box's border:
    ``center`` (x, y) and ``half`` (half width, half height), both ndarrays.
    """
    w, h = size
    patch = FancyBboxPatch((xy[0] - w / 2, xy[1] - h / 2), w, h,
                           boxstyle="round,pad=0.02,rounding_size=0.12",
                           facecolor=COLORS[role], edgecolor="black", linewidth=1.0, zorder=2)
    patch.center, patch.half = np.asarray(xy, float), np.array([w / 2, h / 2])
    ax.add_patch(patch)
    ax.text(xy[0], xy[1], text, ha="center", va="center", fontsize=_size(fontsize), zorder=3)
    return patch


def _border(patch, toward):
    """Point where the ray from the box's centre toward ``toward`` leaves the box."""
    d = np.asarray(toward, float) - patch.center
    scale = np.min(patch.half / np.maximum(np.abs(d), 1e-12))
    return patch.center + d * min(scale, 1.0)


def edge(ax, start, end, text=None, color="black", dashed=False, bend=0.0,
         label_offset=(0.0, 0.0), fontsize=None, gap=0.06):
    """An arrow from ``start`` to ``end`` (nodes from ``node`` or (x, y) points).

    text         -- label placed at the arrow's midpoint plus ``label_offset``
    dashed       -- dashed line (the chapters use it for gradient paths)
    bend         -- curvature: 0 is straight, positive bends to the right of the direction
    fontsize     -- of the label; defaults to one point less than font.size
    gap          -- space in data units left between the arrow and the boxes
    Returns the arrow patch.
    """
    p = start.center if hasattr(start, "center") else np.asarray(start, float)
    q = end.center if hasattr(end, "center") else np.asarray(end, float)
    a = _border(start, q) if hasattr(start, "center") else p
    b = _border(end, p) if hasattr(end, "center") else q
    u = (b - a) / max(np.linalg.norm(b - a), 1e-12)
    a, b = a + gap * u * hasattr(start, "center"), b - gap * u * hasattr(end, "center")
    arrow = FancyArrowPatch(tuple(a), tuple(b), arrowstyle="-|>", mutation_scale=12,
                            connectionstyle=f"arc3,rad={bend}", color=color,
                            linestyle=(0, (4, 3)) if dashed else "-", linewidth=1.3, zorder=1)
    ax.add_patch(arrow)
    if text:
        mid = (a + b) / 2 + np.array([u[1], -u[0]]) * bend * np.linalg.norm(b - a) / 2
        ax.text(mid[0] + label_offset[0], mid[1] + label_offset[1], text, color=color,
                ha="center", va="center", fontsize=_size(fontsize, 1), zorder=3,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.85))
    return arrow
