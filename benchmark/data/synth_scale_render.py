"""Drawing and process helpers of the real-size synthetic generator (:mod:`synth_scale`).

* :func:`layout`: the default generator's layout with the guaranteed objects scaled to the image.
* :func:`render_jpeg`: the default generator's picture (background, objects, slight noise) in
  float32, about twice as fast at 640 x 480; its own bytes (the default mode keeps its renderer).
* :func:`ordered_map`: a function over tasks on worker processes, results in task order.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmark.data import synth
from benchmark.data import synth_shapes as shapes

REFERENCE_PIXELS = 60_000
TAG_PASCAL, TAG_COCO = 3, 4  # distinct from the default generator's tags


def layout(rng: np.random.Generator, h: int, w: int, plan: synth._Plan, coco: bool) -> list[synth._Obj]:
    """:func:`synth._layout` with the guaranteed objects scaled to the image's area."""
    base = max(1.0, h * w / REFERENCE_PIXELS)
    objs: list[synth._Obj] = []
    for attempt in range(synth._ATTEMPTS):
        simple = attempt == synth._ATTEMPTS - 1
        grow = base * (1.0 + 0.04 * attempt)
        objs = synth._try_layout(rng, h, w, plan, grow=grow, simple=simple, coco=coco)
        if synth._layout_ok(objs, plan, h, w, coco):
            break
    return objs


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """:func:`synth_shapes.background` in float32 (the gradient as a broadcast sum): H x W x 3."""
    c0 = shapes.hsv(rng.random(), rng.uniform(0.0, 0.18), rng.uniform(0.35, 0.9)).astype(np.float32)
    c1 = shapes.hsv(rng.random(), rng.uniform(0.0, 0.18), rng.uniform(0.35, 0.9)).astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    u = np.arange(w, dtype=np.float32)[None, :] * np.float32(np.cos(a))
    u = u + np.arange(h, dtype=np.float32)[:, None] * np.float32(np.sin(a))
    u = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    grid = rng.normal(0.0, 0.06, size=(5, 6)).astype(np.float32)
    noise = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR))
    return c0 + (c1 - c0) * u[..., None] + noise[..., None]


def render_jpeg(rng: np.random.Generator, objs: list[synth._Obj], h: int, w: int) -> bytes:
    """JPEG bytes as :func:`synth._render` draws them (background, objects in paint order, slight
    noise), computed in float32 over each object's bounding box: about twice as fast at 640 x 480."""
    img = _background(rng, h, w)
    for o in objs:
        rows, cols = np.flatnonzero(o.mask.any(axis=1)), np.flatnonzero(o.mask.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        style = shapes.class_style(o.cls)
        fill = shapes.render_fill(style, shapes.identity(style, o.ident), (y0, x0, y1, x1), o.shade)
        m = o.mask[y0:y1, x0:x1]
        img[y0:y1, x0:x1][m] = fill[m]
    img += rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(0.012)
    img = np.clip(np.rint(img * np.float32(255.0)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format="JPEG", quality=synth.JPEG_QUALITY)
    return buf.getvalue()


def ordered_map(
    fn: Callable[[Any], Any], tasks: Iterable[Any], n: int, workers: int, desc: str, progress: bool
) -> Iterator[Any]:
    """``fn`` over ``tasks`` in order, on ``workers`` processes, with a progress bar."""
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress)
    try:
        if workers <= 1:
            for t in tasks:
                yield fn(t)
                bar.update()
            return
        ctx = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
        with ctx.Pool(workers) as pool:
            for r in pool.imap(fn, tasks, chunksize=8):
                yield r
                bar.update()
    finally:
        bar.close()
