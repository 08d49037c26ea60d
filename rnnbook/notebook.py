"""Helpers for the book's notebooks: quote the library into the page, and one figure style.

    from rnnbook.notebook import show_source, setup
    setup()                                   # crisp (2x) figures, legible fonts, seeds
    show_source(rnn.forward, "xWb = ", "hs[t] = h")
"""
import inspect
import textwrap


def source_lines(func, first=None, last=None):
    """The lines of ``func``'s source from the first line containing ``first`` to the next
    line containing ``last`` (the whole function when both are None), dedented.

    Raises ValueError when a marker is not found, so a chapter cannot silently quote
    the wrong lines after the library changes.
    """
    lines = inspect.getsource(func).splitlines()
    i = 0
    if first is not None:
        i = next((n for n, line in enumerate(lines) if first in line), None)
        if i is None:
            raise ValueError(f"{func.__qualname__}: no line contains {first!r}")
    j = len(lines) - 1
    if last is not None:
        j = next((n for n in range(i, len(lines)) if last in lines[n]), None)
        if j is None:
            raise ValueError(f"{func.__qualname__}: no line after {first!r} contains {last!r}")
    return textwrap.dedent("\n".join(lines[i:j + 1]))


def show_source(func, first=None, last=None):
    """Print ``source_lines(func, first, last)``: the book quotes the library as it runs."""
    print(source_lines(func, first, last))


def setup(seed=0):
    """The notebooks' common set-up: figures as PNG at twice the resolution (crisp on
    high-density screens and when zoomed; PNG, not SVG, so nbval has no image bytes to
    compare), font sizes legible on a phone, seeded NumPy and torch, and torch on one
    thread (as on Binder; small products run faster without a thread pool).

    Returns a NumPy Generator seeded with ``seed``.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("retina")
    except ImportError:  # not in IPython
        pass
    plt.rcParams.update({
        "figure.dpi": 100, "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
        "legend.fontsize": 10, "xtick.labelsize": 10, "ytick.labelsize": 10,
        "axes.grid": True, "grid.alpha": 0.3,
    })
    try:
        import torch
        torch.manual_seed(seed)
        torch.set_num_threads(1)   # as on Binder's one core; no thread pool to contend
    except ImportError:
        pass
    return np.random.default_rng(seed)
