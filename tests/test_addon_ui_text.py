"""Panel messages wrap at the sidebar's width instead of being cut (addon/ui_text.py needs no Blender)."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

_spec = importlib.util.spec_from_file_location(
    "vist3a_addon_ui_text", Path(__file__).resolve().parents[1] / "addon" / "ui_text.py"
)
ui_text = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ui_text)

# The two messages reported cut in the middle at the default sidebar width.
MESSAGES = [
    "The engine is not set up (Preferences > Add-ons > VIST3A)",
    "No model yet: no trained VIST3A model comes with the add-on. Get a model bundle (a folder with vist3a.json, "
    "e.g. the released VIST3A weights), then choose it in Preferences > Add-ons > VIST3A > Models > Bundle, or copy "
    "it to /home/artist/.config/blender/5.0/extensions/.user/user_default/vist3a/models/default",
]


@pytest.mark.parametrize("message", MESSAGES)
@pytest.mark.parametrize("scale", [1.0, 1.25, 2.0])
def test_messages_wrap_at_the_default_sidebar_width_and_keep_every_character(message, scale):
    width = ui_text.label_width(None, scale)
    # A label of n characters needs about n * CHAR_WIDTH * scale pixels; each line fits the sidebar.
    assert width * ui_text.CHAR_WIDTH * scale + ui_text.ICON_MARGIN * scale <= ui_text.DEFAULT_SIDEBAR_WIDTH * scale
    lines = ui_text.wrap_text(message, width)
    assert all(0 < len(line) <= width for line in lines), lines
    assert "".join(lines).replace(" ", "") == message.replace(" ", "")  # nothing cut or lost
    assert len(lines) > 1


def test_long_paths_break_after_separators():
    lines = ui_text.wrap_text("/home/artist/.config/blender/extensions/vist3a/models/default", 20)
    assert all(len(line) <= 20 for line in lines)
    assert all(line.endswith(("/", ".")) for line in lines[:-1]), lines


def test_wider_regions_take_longer_lines():
    assert ui_text.label_width(600) > ui_text.label_width(300) >= 12
    assert ui_text.wrap_text("", 30) == []


class _Layout:
    """Records what ``wrapped_label`` draws (Blender's UILayout calls it makes)."""

    def __init__(self):
        self.labels = []
        self.scale_y = 1.0

    def column(self, align=False):
        return self

    def label(self, text, icon="NONE"):
        self.labels.append((text, icon))


def test_wrapped_label_draws_one_label_per_line_with_the_icon_first():
    context = SimpleNamespace(
        region=SimpleNamespace(width=300), preferences=SimpleNamespace(system=SimpleNamespace(ui_scale=1.0))
    )
    layout = _Layout()
    ui_text.wrapped_label(layout, context, MESSAGES[0], icon="INFO")
    lines = ui_text.wrap_text(MESSAGES[0], ui_text.label_width(300, 1.0, icon=True))
    assert [text for text, _ in layout.labels] == lines and len(lines) > 1
    assert [icon for _, icon in layout.labels] == ["INFO"] + ["BLANK1"] * (len(lines) - 1)
    plain = _Layout()
    ui_text.wrapped_label(plain, SimpleNamespace(region=None, preferences=None), MESSAGES[0])
    assert {icon for _, icon in plain.labels} == {"NONE"}
    assert [text for text, _ in plain.labels] == ui_text.wrap_text(MESSAGES[0], ui_text.label_width(None, 1.0, False))
