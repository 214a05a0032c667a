"""Geometry of the trial figures, computed once, and their byte-reproducible PNG and SVG files.

matplotlib's constrained layout measures every text of a figure several times on every save,
and on every draw each axis measures its tick labels to place its label and each title
measures the axes under it. Our figures have a fixed font and fixed font sizes, so
:func:`arrange` computes the margins once, from the number of lines of the titles and labels
and the measured width of the y tick labels, places the panels in inches and pins every axis
label at its distance from the axis (with the style's ``axes.titley`` pinning the titles).
:func:`write_png_svg` renders the PNG once on the figure's own Agg canvas and encodes it
without an alpha channel (the figures are opaque) or any metadata but its resolution, then
writes the SVG with its text as text (``svg.fonttype: none``), which is much faster and
smaller than glyph paths.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

POINT = 1 / 72  # inches
# Font sizes (points) of the style in trialflow.figures.
# (Titles of up to 11 points: a 10-point title gets a point of extra room.)
SUPTITLE_SIZE, TITLE_SIZE, LABEL_SIZE, TICK_SIZE, LEGEND_SIZE = 11.0, 11.0, 9.0, 8.0, 8.0
# A tick (3.5 pt) and its label's pad (3.5 pt); then the axis label's pad; the title's pad.
TICK_SPACE, LABEL_PAD, TITLE_PAD = 7.0, 4.0, 6.0
EDGE = 0.1  # inches of white at the figure's edges
# Measured on DejaVu Sans: one line is 1.13 font sizes high, each further line 1.33 more.
_FIRST_LINE, _NEXT_LINE = 1.13, 1.33
# zlib level of the PNG files: level 1 encodes the bundled trials' figures twice as fast as
# the default 6, for files 16% larger.
PNG_COMPRESSION = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def text_height(text: str, size: float) -> float:
    """Height in inches of ``text`` (lines separated by newlines) at ``size`` points; 0 if empty."""
    if not text:
        return 0.0
    return size * (_FIRST_LINE + _NEXT_LINE * text.count("\n")) * POINT


def text_width(fig: Figure, text: str, size: float) -> float:
    """Width in inches of the widest line of ``text`` at ``size`` points, measured by the
    figure's own renderer (so the measure is cached for the drawing)."""
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    prop = FontProperties(family="DejaVu Sans", size=size)
    return (
        max(
            renderer.get_text_width_height_descent(line, prop, ismath=False)[0]
            for line in text.split("\n")
        )
        / fig.dpi
    )


def legend_height(rows: int) -> float:
    """Height in inches of a frameless legend of ``rows`` rows of one-line entries."""
    if rows == 0:
        return 0.0
    # Rows of 1.13 font sizes, 0.5 font sizes apart, and a border pad of 0.4 each side.
    return LEGEND_SIZE * (_FIRST_LINE * rows + 0.5 * (rows - 1) + 0.8) * POINT


@dataclass(frozen=True)
class Panels:
    """Room in inches around a row of panels, beyond their titles, tick labels and labels.

    ``legend_rows`` rows of legend sit centred under the panels (see :func:`legend_below`);
    ``gap`` separates neighbouring panels; ``right`` is the margin right of the last panel
    (room for the last x tick label); ``top`` and ``bottom`` add room for text placed outside
    the titles and labels (a subtitle or "favours" labels).
    """

    legend_rows: int = 0
    gap: float = 0.45
    right: float = 0.2
    top: float = 0.0
    bottom: float = 0.0


def arrange(fig: Figure, axes: Sequence[Axes], panels: Panels = Panels()) -> None:
    """Place ``axes`` side by side in ``fig`` with margins computed from their texts.

    Call after everything is drawn and labelled: the top margin holds the figure's suptitle and
    the tallest axes title; the bottom margin the x tick labels, x labels and legend rows;
    left of each panel its y label and its y tick labels, measured at the panel's final height
    (where the tick locator puts the ticks). Axis labels are then pinned at their place.
    """
    width, height = fig.get_size_inches()
    suptitle = fig.get_suptitle()
    top = EDGE + panels.top + text_height(suptitle, SUPTITLE_SIZE)
    titles = [ax.get_title(loc) for ax in axes for loc in ("left", "center", "right")]
    top += max(text_height(t, TITLE_SIZE) for t in titles)
    top += TITLE_PAD * POINT if any(titles) else 0.0
    xticks = max(_x_tick_height(ax) for ax in axes)
    xlabel = max(text_height(ax.get_xlabel(), LABEL_SIZE) for ax in axes)
    bottom = EDGE + panels.bottom + legend_height(panels.legend_rows) + _under(xticks, xlabel)
    plot_h = height - top - bottom
    # Provisional widths: the y tick locator needs the final height only.
    for ax in axes:
        ax.set_position((0.0, bottom / height, 0.5, plot_h / height))
    lefts = [_left_room(fig, ax) for ax in axes]
    plot_w = (width - EDGE - sum(lefts) - panels.gap * (len(axes) - 1) - panels.right) / len(axes)
    x = EDGE
    for ax, left in zip(axes, lefts, strict=True):
        x += left
        ax.set_position((x / width, bottom / height, plot_w / width, plot_h / height))
        _pin_labels(ax, left - text_height(ax.get_ylabel(), LABEL_SIZE), plot_w, xticks, plot_h)
        x += plot_w + panels.gap


def _under(xticks: float, xlabel: float) -> float:
    """Room under a panel for its ticks, tick labels and x label."""
    return TICK_SPACE * POINT + xticks + ((LABEL_PAD * POINT + xlabel) if xlabel else 0.0)


def _x_tick_height(ax: Axes) -> float:
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible()]
    return max((text_height(t, TICK_SIZE) for t in labels), default=0.0)


def _left_room(fig: Figure, ax: Axes) -> float:
    """Inches left of a panel for its y tick labels, their pads and its y label."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    labels = [t for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
    ticks = max((t.get_window_extent(renderer).width for t in labels), default=0.0) / fig.dpi
    label = text_height(ax.get_ylabel(), LABEL_SIZE)
    return ticks + (TICK_SPACE + (LABEL_PAD if label else 0.0)) * POINT + label


def _pin_labels(ax: Axes, y_room: float, plot_w: float, xticks: float, plot_h: float) -> None:
    """Fix the axis labels at their computed distance from the axes (no per-draw measuring).

    ``y_room`` is the room left of the panel for the y tick labels and their pads (inches);
    the y label's right edge sits there. The x label's top sits under the x tick labels.
    """
    ax.yaxis.set_label_coords(-y_room / plot_w, 0.5)
    ax.xaxis.set_label_coords(0.5, -((TICK_SPACE + LABEL_PAD) * POINT + xticks) / plot_h)


def legend_below(fig: Figure, handles: Sequence[Artist], ncols: int) -> int:
    """A frameless legend centred at the bottom of the figure; returns its number of rows.

    Uses up to ``ncols`` columns, fewer when the entries would run past the figure's edges.
    Pass the rows to :func:`arrange` (``Panels.legend_rows``) to leave room for them.
    """
    # Each entry: handle (2 font sizes), pad (0.8) and text; columns 2 font sizes apart.
    widths = [
        text_width(fig, str(h.get_label()), LEGEND_SIZE) + 4.8 * LEGEND_SIZE * POINT
        for h in handles
    ]
    width, height = fig.get_size_inches()
    ncols = max(1, min(ncols, len(handles)))
    while ncols > 1 and _columns_width(widths, ncols) > width - 2 * EDGE:
        ncols -= 1
    fig.legend(
        handles=list(handles),
        loc="lower center",
        bbox_to_anchor=(0.5, EDGE / height),
        ncols=ncols,
        borderaxespad=0.0,
    )
    return math.ceil(len(handles) / ncols)


def _columns_width(widths: Sequence[float], ncols: int) -> float:
    """Width of a legend whose entries fill ``ncols`` columns top to bottom, left to right."""
    rows = math.ceil(len(widths) / ncols)
    return sum(max(widths[i : i + rows]) for i in range(0, len(widths), rows))


def write_png_svg(fig: Figure, png: Path, svg: Path, dpi: float) -> None:
    """Write ``fig`` as an RGB PNG at ``dpi`` and as an SVG, with no date or software version.

    Call inside the figures' style (``svg.hashsalt`` makes the SVG ids reproducible).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # A figure made through pyplot may have another canvas; ours have an Agg one already.
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    if fig.dpi != dpi:
        fig.set_dpi(dpi)
    canvas.draw()
    png.write_bytes(png_bytes(np.asarray(canvas.buffer_rgba())[..., :3], dpi))
    fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(rgb: np.ndarray, dpi: float) -> bytes:
    """An 8-bit RGB image (rows x columns x 3) as a PNG file at ``dpi``.

    Rows are stored unfiltered: these figures are mostly white and flat colours, which zlib
    compresses as small as after Pillow's adaptive row filters, and three times faster
    (the bundled trials' figures: 2.6 MB in 0.13 s against 2.7 MB in 0.40 s).
    """
    height, width, _ = rgb.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # each row: filter 0, then pixels
    rows[:, 1:] = rgb.reshape(height, -1)
    per_metre = int(dpi / 0.0254 + 0.5)
    return b"".join([
        _PNG_SIGNATURE,
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
        _png_chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),
        _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_COMPRESSION)),
        _png_chunk(b"IEND", b""),
    ])  # fmt: skip
