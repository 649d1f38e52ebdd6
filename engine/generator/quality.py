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

import re
from dataclasses import dataclass

import numpy as np

from engine.data import FLOOR_COLORS, OBJECT_COLORS, SKY_COLORS, SyntheticScene
from engine.data.scenes import OBJECT_SHAPES

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


RELATION_WORDS = ("to the left of", "to the right of", "in front of", "behind")


@dataclass(frozen=True)
class NamedObject:
    """An object a caption names: its colour (a key of ``OBJECT_COLORS``) and shape."""

    color_name: str
    shape: str


@dataclass(frozen=True)
class NamedRelation:
    """``objects[subject]`` is ``relation`` ``objects[anchor]`` (indices into the caption's objects)."""

    subject: int
    relation: str
    anchor: int


@dataclass(frozen=True)
class CaptionLayout:
    """What a caption of the world's grammar states, in the form :func:`check_frame` reads."""

    objects: tuple[NamedObject, ...]
    relations: tuple[NamedRelation, ...]
    floor: str | None
    sky: str | None


def parse_caption(caption: str) -> CaptionLayout:
    """The objects and relations a caption of the world's grammar names (``engine.data.describe_layout``:
    "a red cube to the left of a blue sphere and a green cone behind the red cube, on a grey floor under
    a clear sky"), so that any such prompt, not only a world scene's, can be checked in a frame.

    Raises ValueError naming the part of the caption that does not follow the grammar (an unknown colour or
    shape, a clause without a relation, a colour named for two different objects).
    """
    text = " ".join(caption.lower().strip().rstrip(".").split())
    floor = sky = None
    ground = re.search(r",? on an? ([a-z ]+?) floor(?: under an? ([a-z]+) sky)?$", text)
    if ground:
        floor, sky = ground.group(1), ground.group(2)
        text = text[: ground.start()]
    clauses = [c for c in re.split(r", and |, | and ", text) if c]
    if not clauses:
        raise ValueError(f"the caption {caption!r} names no object")
    objects: list[NamedObject] = []
    relations: list[NamedRelation] = []

    def index_of(phrase: str) -> int:
        words = phrase.split()
        if len(words) != 3 or words[0] not in ("a", "an", "the") or words[1] not in OBJECT_COLORS:
            raise ValueError(f"{phrase!r} is not 'a COLOUR SHAPE' with a colour of the world")
        if words[2] not in OBJECT_SHAPES:
            raise ValueError(f"{phrase!r}: {words[2]!r} is not a shape of the world")
        found = NamedObject(words[1], words[2])
        for i, known in enumerate(objects):
            if known.color_name == found.color_name:
                if known != found:
                    raise ValueError(f"the colour {found.color_name} names two objects ({known.shape}, {found.shape})")
                return i
        objects.append(found)
        return len(objects) - 1

    for clause in clauses:
        relation = next((r for r in RELATION_WORDS if f" {r} " in f" {clause} "), None)
        if relation is None:
            if len(clauses) > 1:
                raise ValueError(f"{clause!r} says where nothing is (no relation such as 'to the left of')")
            index_of(clause)
            continue
        subject, anchor = (part.strip() for part in clause.split(f" {relation} ", 1))
        relations.append(NamedRelation(index_of(subject), relation, index_of(anchor)))
    return CaptionLayout(tuple(objects), tuple(relations), floor, sky)


@dataclass
class FrameCheck:
    """What a frame shows of a scene's caption."""

    colors_visible: dict[str, bool]  # object colour name -> visible
    relations_correct: list[bool]  # one per relation of the caption, in order
    # Fraction of the frame's pixels labelled with any object colour (true renders of the world: about 0.16).
    object_area: float = float("nan")
    # Fraction of those pixels whose colour the caption names: a frame flooded with one named colour
    # passes the visibility check for it; this says how much of what looks like an object is what was asked.
    named_share: float = float("nan")

    @property
    def color_accuracy(self) -> float:
        return float(np.mean(list(self.colors_visible.values())))

    @property
    def relation_accuracy(self) -> float:
        return float(np.mean(self.relations_correct)) if self.relations_correct else float("nan")


def check_frame(
    frame: np.ndarray, scene: SyntheticScene | CaptionLayout, min_fraction: float = MIN_FRACTION
) -> FrameCheck:
    """Colour visibility and relation correctness of ``scene``'s caption in ``frame`` (H, W, 3) in [0, 1];
    ``scene`` is a world scene or a parsed caption (:func:`parse_caption`).

    A relation whose subject or anchor colour is not visible counts as wrong. ``object_area`` and
    ``named_share`` (see :class:`FrameCheck`) tell a frame that shows the named objects from one flooded
    with their colours.
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
    is_object = np.array([name.startswith("object:") for name in names])[labels]
    named = {f"object:{obj.color_name}" for obj in scene.objects}
    is_named = np.array([name in named for name in names])[labels]
    object_area = float(is_object.mean())
    named_share = float(is_named.sum() / is_object.sum()) if is_object.any() else 0.0
    return FrameCheck(visible, correct, object_area, named_share)
