"""Text for the panel's labels (standard library only, so it is tested without Blender).

Blender draws a label on one line and cuts what does not fit out of its middle ("The engine is not
…dd-ons > VIST3A)"), so every message goes through ``wrap_text`` with the width of the region
(``wrapped_label`` draws it into a layout it is given; it never imports bpy).
"""

from typing import Optional

# The 3D View sidebar's default width in pixels (at UI scale 1), used when the region is unknown.
DEFAULT_SIDEBAR_WIDTH = 300
# Average width of a character of Blender's UI font at scale 1, generous so that lines never get cut.
CHAR_WIDTH = 7.0
ICON_MARGIN = 60  # an icon, the panel's margins and a little slack, in pixels
PLAIN_MARGIN = 34


def label_width(region_width: Optional[int], ui_scale: float = 1.0, icon: bool = True) -> int:
    """Characters per label line in a region ``region_width`` pixels wide (None: the default sidebar)."""
    width = DEFAULT_SIDEBAR_WIDTH * ui_scale if region_width is None else region_width
    margin = (ICON_MARGIN if icon else PLAIN_MARGIN) * ui_scale
    return max(int((width - margin) / (CHAR_WIDTH * ui_scale)), 12)


def wrap_text(text: str, width: int) -> list:
    """``text`` as lines of at most ``width`` characters, broken at spaces; a word longer than a line (a
    path) is broken after a separator where it has one. Joining the lines gives back every character."""
    width = max(width, 8)
    lines, current = [], ""
    for word in text.split():
        while len(word) > width:
            cut = max(word.rfind(separator, 0, width) for separator in "/\\._-")
            cut = cut + 1 if cut > 0 else width
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:cut])
            word = word[cut:]
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return lines + ([current] if current else [])


def label_width_chars(context, icon: bool = True) -> int:
    """How many characters fit on one label line in the current region (the sidebar) at the UI scale."""
    region = getattr(context, "region", None)
    scale = context.preferences.system.ui_scale if context.preferences else 1.0
    return label_width(region.width if region is not None else None, scale, icon)


def wrapped_label(layout, context, text: str, icon: str = "NONE") -> None:
    """A message as several labels in ``layout``, wrapped to the region's width (the icon on the first line)."""
    column = layout.column(align=True)
    column.scale_y = 0.8
    for index, line in enumerate(wrap_text(text, label_width_chars(context, icon != "NONE"))):
        column.label(text=line, icon=icon if index == 0 else "BLANK1" if icon != "NONE" else "NONE")
