"""Drawing helpers of the synthetic datasets (:mod:`benchmark.data.synth`).

Every class has a fixed appearance (:class:`ClassStyle`): a shape family rendered as a polygon, a colour
family (hue, saturation, value) and a texture. The (shape, hue, texture) triple is unique per class id, for
any class id 1..80, so the same table serves PASCAL (ids 1..20) and COCO (ids 1..80). A class has
:data:`N_IDENTITIES` identities (variants differing in aspect ratio, hue shift and texture scale).

Masks are rasterised from polygons with pycocotools, so a COCO polygon annotation decodes
(``annToMask``) to exactly the pixels painted in the image.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "hexagon",
    "crescent",
    "blob",
)
TEXTURES: tuple[str, ...] = ("solid", "stripes", "dots", "checker", "gradient")
N_IDENTITIES = 3

_GOLDEN = 0.6180339887498949
_LEVELS = (0.95, 0.78, 0.6)  # saturation / value levels of object colours (backgrounds stay below 0.2 sat)
_ASPECTS = (1.0, 0.72, 1.35)  # per identity
_HUE_SHIFTS = (0.0, -0.012, 0.012)  # per identity
_PERIODS = (7, 10, 13)  # texture period in pixels, per identity


@dataclass(frozen=True)
class ClassStyle:
    """Fixed appearance of one class."""

    cls: int
    shape: str
    texture: str
    hue: float  # 0..1
    sat: float
    val: float
    blob: tuple[tuple[int, float, float], ...]  # (harmonic, amplitude, phase) of the blob outline
    texture_angle: float  # radians, direction of stripes / gradient


@dataclass(frozen=True)
class Identity:
    """One of the variants of a class."""

    aspect: float
    hue: float
    period: int


def class_style(cls: int) -> ClassStyle:
    """Appearance of class ``cls`` (1-based). Independent of the seed and of the dataset."""
    if cls < 1:
        raise ValueError(f"class ids are 1-based, got {cls}")
    i = cls - 1
    rng = np.random.default_rng([7919, cls])
    blob = tuple((k, float(rng.uniform(0.06, 0.16)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 5))
    return ClassStyle(
        cls=cls,
        shape=SHAPES[i % len(SHAPES)],
        texture=TEXTURES[(i + i // len(SHAPES)) % len(TEXTURES)],
        hue=(i * _GOLDEN) % 1.0,
        sat=_LEVELS[i % 3],
        val=_LEVELS[(i // 3) % 3],
        blob=blob,
        texture_angle=float(rng.uniform(0, np.pi)),
    )


def identity(style: ClassStyle, k: int) -> Identity:
    """Variant ``k`` (0..N_IDENTITIES-1) of a class."""
    return Identity(
        aspect=_ASPECTS[k], hue=(style.hue + _HUE_SHIFTS[k]) % 1.0, period=_PERIODS[(k + style.cls) % 3]
    )


def _circle_pts(n: int, r: float = 1.0, a0: float = 0.0, a1: float = 2 * np.pi) -> np.ndarray:
    t = np.linspace(a0, a1, n, endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _arc(cx: float, r: float, a0: float, a1: float, n: int) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([cx + r * np.cos(t), r * np.sin(t)], axis=1)


@cache
def _base_polygon(cls: int) -> np.ndarray:
    """The outline of a class's shape, centred near the origin, roughly unit size (before aspect)."""
    style = class_style(cls)
    shape = style.shape
    if shape == "circle":
        p = _circle_pts(40)
    elif shape == "square":
        p = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    elif shape == "triangle":
        p = _circle_pts(3, 1.0, -np.pi / 2, 1.5 * np.pi)
    elif shape == "star":
        t = np.linspace(-np.pi / 2, 1.5 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        p = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif shape == "cross":
        a = 0.33
        p = np.array(
            [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a]]
            + [[-1, -a], [-a, -a]],
            dtype=float,
        )
    elif shape == "ring":  # a C-shaped ring, a simple polygon (an annulus with a gap on the right)
        g = np.deg2rad(28)
        outer = _arc(0.0, 1.0, g, 2 * np.pi - g, 36)
        inner = _arc(0.0, 0.58, 2 * np.pi - g, g, 28)
        p = np.concatenate([outer, inner])
    elif shape == "diamond":
        p = np.array([[0, -1.35], [0.8, 0], [0, 1.35], [-0.8, 0]], dtype=float)
    elif shape == "hexagon":
        p = _circle_pts(6)
    elif shape == "crescent":  # unit disc minus a disc centred at (0.55, 0) through the arc ends
        a = np.deg2rad(60)
        outer = _arc(0.0, 1.0, a, 2 * np.pi - a, 32)
        end = np.array([np.cos(a), np.sin(a)])
        r2 = float(np.hypot(end[0] - 0.55, end[1]))
        b = float(np.arctan2(end[1], end[0] - 0.55))
        inner = _arc(0.55, r2, 2 * np.pi - b, b, 24)
        p = np.concatenate([outer, inner])
    elif shape == "blob":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = 1.0 + sum(amp * np.cos(k * t + ph) for k, amp, ph in style.blob)
        p = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    else:  # pragma: no cover - SHAPES is closed
        raise AssertionError(shape)
    return p - p.mean(axis=0)


def polygon_area(p: np.ndarray) -> float:
    """Area of a simple polygon (shoelace formula)."""
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def shape_polygon(cls: int, ident: Identity, area: float, angle: float) -> np.ndarray:
    """The outline of one object of class ``cls`` with the given area (pixels), rotated by ``angle``
    radians, centred at the origin."""
    p = _base_polygon(cls) * np.array([ident.aspect, 1.0 / ident.aspect])
    c, s = np.cos(angle), np.sin(angle)
    p = p @ np.array([[c, s], [-s, c]])
    return p * np.sqrt(area / polygon_area(p))


def rasterize(polys: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """Boolean H x W mask of the union of polygons (pixel coordinates, x then y), as pycocotools
    ``annToMask`` decodes the same polygons."""
    rles = mask_utils.frPyObjects([p.reshape(-1).tolist() for p in polys], h, w)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def render_fill(
    style: ClassStyle, ident: Identity, box: tuple[int, int, int, int], shade: float
) -> np.ndarray:
    """Float RGB texture (values 0..1) of an object over the pixel box (y0, x0, y1, x1)."""
    y0, x0, y1, x1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    base = hsv(ident.hue, style.sat, style.val * shade)
    alt = hsv(ident.hue + 0.02, style.sat * 0.85, style.val * shade * 0.62)
    ca, sa = np.cos(style.texture_angle), np.sin(style.texture_angle)
    per = ident.period
    if style.texture == "solid":
        t = np.zeros_like(xx)
    elif style.texture == "stripes":
        t = ((xx * ca + yy * sa) // (per / 2)) % 2
    elif style.texture == "dots":
        dx = (xx % per) - per / 2
        dy = (yy % per) - per / 2
        t = (dx * dx + dy * dy <= (per * 0.3) ** 2).astype(np.float32)
    elif style.texture == "checker":
        t = ((xx // (per / 2) + yy // (per / 2)) % 2).astype(np.float32)
    elif style.texture == "gradient":
        u = xx * ca + yy * sa
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    else:  # pragma: no cover - TEXTURES is closed
        raise AssertionError(style.texture)
    return base[None, None, :] * (1 - t[..., None]) + alt[None, None, :] * t[..., None]


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth low-saturation background: a linear gradient between two greyish colours plus
    low-frequency noise. Float H x W x 3 in 0..1."""
    c0 = hsv(rng.random(), rng.uniform(0.0, 0.18), rng.uniform(0.35, 0.9))
    c1 = hsv(rng.random(), rng.uniform(0.0, 0.18), rng.uniform(0.35, 0.9))
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * np.cos(a) + yy * np.sin(a)
    u = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    img = c0[None, None, :] * (1 - u[..., None]) + c1[None, None, :] * u[..., None]
    grid = rng.normal(0.0, 0.06, size=(5, 6)).astype(np.float32)
    noise = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR))
    return img + noise[..., None]


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def voc_colormap(n: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colour map (bit-interleaving), n x 3 uint8."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap
