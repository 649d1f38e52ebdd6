"""Does a frame show its caption? Colour and relation checks from colour regions of the first frame.

The world's objects have flat named colours under baked lighting (a base colour scaled by a brightness
between the ambient 0.45 and 1), so a pixel is assigned to the palette entry (object colours, floor
colours, sky tints) that explains it best as ``brightness x base`` (brightness in [0.35, 1.1]); a named
object's colour is *visible* when at least ``min_fraction`` of the frame's pixels go to it.

Relations are read from the regions of the two objects' colours in the first frame, which is the
caption's reference view: "to the left of" / "to the right of" compare the regions' mean column;
"in front of" / "behind" compare the regions' lowest rows (95th percentile), since the cameras look down
at the floor, where a nearer object stands lower in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data import FLOOR_COLORS, OBJECT_COLORS, SKY_COLORS, SyntheticScene

_BRIGHTNESS = (0.35, 1.1)
MIN_FRACTION = 0.003  # 49 pixels of a 128 x 128 frame


def _palette() -> tuple[list[str], np.ndarray]:
    names = [f"object:{n}" for n in OBJECT_COLORS] + [f"floor:{n}" for n in FLOOR_COLORS]
    names += [f"sky:{n}" for n in SKY_COLORS]
    colors = list(OBJECT_COLORS.values()) + list(FLOOR_COLORS.values()) + list(SKY_COLORS.values())
    return names, np.asarray(colors, dtype=np.float64)


def label_pixels(frame: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Palette names and (H, W) index of the palette entry explaining each pixel of an (H, W, 3) [0, 1] frame.

    Sky entries are matched as they are (brightness 1); objects and floors at the best brightness in
    the lit range.
    """
    names, colors = _palette()
    pixels = frame.reshape(-1, 3).astype(np.float64)
    norms = (colors**2).sum(axis=1)
    scale = np.clip(pixels @ colors.T / np.maximum(norms, 1e-12), *_BRIGHTNESS)  # (N, K)
    is_sky = np.array([n.startswith("sky:") for n in names])
    scale[:, is_sky] = 1.0
    residual = ((pixels[:, None, :] - scale[..., None] * colors[None]) ** 2).sum(axis=-1)
    return names, residual.argmin(axis=1).reshape(frame.shape[:2])


@dataclass
class FrameCheck:
    """What a frame shows of a scene's caption."""

    colors_visible: dict[str, bool]  # object colour name -> visible
    relations_correct: list[bool]  # one per relation of the caption, in order

    @property
    def color_accuracy(self) -> float:
        return float(np.mean(list(self.colors_visible.values())))

    @property
    def relation_accuracy(self) -> float:
        return float(np.mean(self.relations_correct)) if self.relations_correct else float("nan")


def check_frame(frame: np.ndarray, scene: SyntheticScene, min_fraction: float = MIN_FRACTION) -> FrameCheck:
    """Colour visibility and relation correctness of ``scene``'s caption in ``frame`` (H, W, 3) in [0, 1].

    A relation whose subject or anchor colour is not visible counts as wrong.
    """
    names, labels = label_pixels(np.asarray(frame))
    height, width = labels.shape
    regions = {}
    for obj in scene.objects:
        mask = labels == names.index(f"object:{obj.color_name}")
        regions[obj.color_name] = mask if mask.mean() >= min_fraction else None
    visible = {name: mask is not None for name, mask in regions.items()}
    correct = []
    for relation in scene.relations:
        subject = regions[scene.objects[relation.subject].color_name]
        anchor = regions[scene.objects[relation.anchor].color_name]
        if subject is None or anchor is None:
            correct.append(False)
            continue
        if relation.relation in ("to the left of", "to the right of"):
            difference = np.nonzero(subject)[1].mean() - np.nonzero(anchor)[1].mean()
            correct.append(bool(difference < 0) if relation.relation == "to the left of" else bool(difference > 0))
        else:
            difference = np.percentile(np.nonzero(subject)[0], 95) - np.percentile(np.nonzero(anchor)[0], 95)
            correct.append(bool(difference > 0) if relation.relation == "in front of" else bool(difference < 0))
    return FrameCheck(visible, correct)
