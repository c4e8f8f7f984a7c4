"""Procedural captioned shapes: the grammar, its vocabulary, a batched renderer and a prompt parser.

Captions follow ``a [small|big] <colour> <shape> [at the <side>] on a <colour> background``. The renderer
draws anti-aliased shapes with torch (2x supersampling) so a training batch costs a few milliseconds.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Palette in RGB [0, 1]; saturated and far apart so colour checks are unambiguous.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.12, 0.70, 0.24),
    "blue": (0.16, 0.24, 0.86),
    "yellow": (0.94, 0.86, 0.16),
    "white": (0.96, 0.96, 0.96),
    "black": (0.06, 0.06, 0.06),
    "purple": (0.55, 0.20, 0.70),
    "orange": (0.96, 0.55, 0.08),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (0.11, 0.15), None: (0.17, 0.23), "big": (0.26, 0.32)}  # radius as a fraction of the side
SIDES = ("top", "bottom", "left", "right")
WORDS = ("a", "at", "the", "on", "background", *SIDES, *[s for s in SIZES if s], *COLOURS, *SHAPES)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")

#: (foreground, shape, background) combinations never shown in training, to measure generalization.
_ALL_COMBOS = [(f, s, b) for f, s, b in itertools.product(COLOURS, SHAPES, COLOURS) if f != b]
HELD_OUT: tuple[tuple[str, str, str], ...] = tuple(sorted(random.Random(1234).sample(_ALL_COMBOS, 12)))
TRAIN_COMBOS: tuple[tuple[str, str, str], ...] = tuple(c for c in _ALL_COMBOS if c not in HELD_OUT)


@dataclass(frozen=True)
class Scene:
    """One captioned image: what is drawn, and which attributes the caption states."""

    fg: str
    shape: str
    bg: str
    size: str | None = None
    side: str | None = None

    @property
    def caption(self) -> str:
        size = f"{self.size} " if self.size else ""
        side = f" at the {self.side}" if self.side else ""
        return f"a {size}{self.fg} {self.shape}{side} on a {self.bg} background"


_CAPTION = re.compile(
    r"^an? (?:(?P<size>small|big) )?(?P<fg>\w+) (?P<shape>\w+)"
    r"(?: at the (?P<side>\w+))? on an? (?P<bg>\w+) background$"
)


def parse_prompt(prompt: str) -> Scene | None:
    """The scene a caption asks for, or None when the caption is outside the grammar."""
    m = _CAPTION.match(" ".join(prompt.lower().replace(".", " ").split()))
    if not m or m["fg"] not in COLOURS or m["bg"] not in COLOURS or m["shape"] not in SHAPES:
        return None
    if m["side"] is not None and m["side"] not in SIDES:
        return None
    return Scene(fg=m["fg"], shape=m["shape"], bg=m["bg"], size=m["size"], side=m["side"])


def unknown_words(prompt: str) -> list[str]:
    """Words of a prompt that the embedded model's vocabulary does not have."""
    return [w for w in prompt.lower().split() if w not in WORDS]


def sample_scenes(n: int, rng: random.Random, combos=TRAIN_COMBOS) -> list[Scene]:
    """Random scenes over the given combinations; size and side are stated in about half the captions."""
    scenes = []
    for _ in range(n):
        fg, shape, bg = rng.choice(combos)
        size = rng.choice([None, "small", "big"])
        side = rng.choice(SIDES) if rng.random() < 0.4 else None
        scenes.append(Scene(fg, shape, bg, size, side))
    return scenes


def render(scenes: list[Scene], resolution: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw scenes as a float batch [B, 3, H, W] in [0, 1]; unstated size/position are drawn at random."""
    n, ss = len(scenes), 2
    side_px = resolution * ss
    u = torch.rand(n, 4, generator=generator)
    radius, cx, cy = torch.empty(n), torch.empty(n), torch.empty(n)
    for i, sc in enumerate(scenes):
        # A scene whose caption omits the size may be of any size, so the model learns the word as optional.
        size = sc.size if sc.size else [None, "small", "big"][int(u[i, 3] * 3) % 3]
        lo, hi = SIZES[size]
        radius[i] = lo + (hi - lo) * u[i, 0]
        free_x, free_y = 0.30 + 0.40 * u[i, 1], 0.30 + 0.40 * u[i, 2]
        near, mid = 0.22 + 0.10 * u[i, 1], 0.35 + 0.30 * u[i, 2]
        cx[i], cy[i] = {
            "top": (mid, near),
            "bottom": (mid, 1 - near),
            "left": (near, mid),
            "right": (1 - near, mid),
        }.get(sc.side, (free_x, free_y))
    coords = (torch.arange(side_px) + 0.5) / side_px
    y, x = coords.view(1, -1, 1), coords.view(1, 1, -1)
    dx, dy = x - cx.view(-1, 1, 1), y - cy.view(-1, 1, 1)
    r = radius.view(-1, 1, 1)
    circle = dx**2 + dy**2 <= r**2
    square = (dx.abs() <= 0.85 * r) & (dy.abs() <= 0.85 * r)
    # Upward triangle: below the two slanted edges and above the base.
    triangle = (dy <= 0.8 * r) & (dy >= -r + 2 * dx.abs() * 0.95)
    shape_idx = torch.tensor([SHAPES.index(s.shape) for s in scenes]).view(-1, 1, 1)
    mask = torch.where(shape_idx == 0, circle, torch.where(shape_idx == 1, square, triangle)).float()
    mask = F.avg_pool2d(mask.unsqueeze(1), ss)  # anti-aliased coverage in [0, 1]
    fg = torch.tensor([COLOURS[s.fg] for s in scenes]).view(n, 3, 1, 1)
    bg = torch.tensor([COLOURS[s.bg] for s in scenes]).view(n, 3, 1, 1)
    return mask * fg + (1 - mask) * bg


def palette_membership(images: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """Soft assignment of every pixel to the palette colours: [B, P, H, W], summing to 1 over P."""
    palette = torch.tensor(list(COLOURS.values()), dtype=images.dtype, device=images.device)
    dist2 = ((images.unsqueeze(1) - palette.view(1, -1, 3, 1, 1)) ** 2).sum(2)
    return torch.softmax(-dist2 / temperature, dim=1)


def border_mask(resolution: int) -> torch.Tensor:
    """Boolean [H, W] mask of the outer ring of pixels where the background shows."""
    width = max(1, resolution // 16)
    m = torch.zeros(resolution, resolution, dtype=torch.bool)
    m[:width], m[-width:], m[:, :width], m[:, -width:] = True, True, True, True
    return m
