"""The benchmark's caption check (colour regions of the first frame), on true renders and on broken ones."""

import numpy as np

from engine.data import SKY_COLORS, SyntheticClipDataset, generate_scene
from engine.generator.quality import check_frame, label_pixels


def heldout_frames(count):
    dataset = SyntheticClipDataset(count, split="heldout", num_frames=1, height=96, width=96)
    for index in range(count):
        yield generate_scene(dataset.item_seed(index)), dataset[index].frames[0].numpy()


def test_true_renders_pass_the_check():
    colours, relations = [], []
    for scene, frame in heldout_frames(12):
        check = check_frame(frame, scene)
        colours += list(check.colors_visible.values())
        relations += check.relations_correct
    assert np.mean(colours) >= 0.95 and np.mean(relations) >= 0.85 and len(relations) >= 12


def test_wrong_frames_fail_the_check():
    for scene, frame in heldout_frames(4):
        sky = np.broadcast_to(np.asarray(SKY_COLORS[scene.sky_color_name]), frame.shape)
        blank = check_frame(sky, scene)
        assert not any(blank.colors_visible.values()) and not any(blank.relations_correct)
        # Mirrored left-right: every left/right relation flips.
        mirrored = check_frame(frame[:, ::-1], scene)
        truth = check_frame(frame, scene)
        for relation, before, after in zip(scene.relations, truth.relations_correct, mirrored.relations_correct):
            if relation.relation in ("to the left of", "to the right of") and before:
                assert not after


def test_pixels_are_labelled_under_shading():
    names, labels = label_pixels(np.array([[[0.43, 0.07, 0.06], [0.62, 0.78, 0.95]]]))  # a shaded red, clear sky
    assert names[labels[0, 0]] == "object:red" and names[labels[0, 1]] == "sky:clear"


def test_every_world_caption_parses_to_its_layout():
    """parse_caption reads back the objects and relations of the world's own captions, so any prompt in
    the world's grammar (the README's, a reviewer's) can be checked in a frame."""
    import pytest

    from engine.generator.quality import parse_caption

    dataset = SyntheticClipDataset(60, split="train", num_frames=1, height=8, width=8)
    for index in range(60):
        scene = generate_scene(dataset.item_seed(index))
        layout = parse_caption(scene.caption)
        assert sorted((o.color_name, o.shape) for o in layout.objects) == sorted(
            (o.color_name, o.shape) for o in scene.objects
        )

        def stated(objects, relations):
            return sorted((objects[r.subject].color_name, r.relation, objects[r.anchor].color_name) for r in relations)

        assert stated(layout.objects, layout.relations) == stated(scene.objects, scene.relations), scene.caption
        assert layout.floor == scene.floor_color_name
    readme = parse_caption("a yellow tree to the left of a blue house on a beige floor under a sunset sky")
    assert [o.shape for o in readme.objects] == ["tree", "house"] and readme.sky == "sunset"
    assert [(r.subject, r.relation, r.anchor) for r in readme.relations] == [(0, "to the left of", 1)]
    with pytest.raises(ValueError, match="'chair' is not a shape of the world"):
        parse_caption("a red chair to the left of a blue cube")
    with pytest.raises(ValueError, match="says where nothing is"):
        parse_caption("a red cube and a blue cube")


def test_a_frame_flooded_with_the_named_colours_passes_visibility_but_not_the_named_share():
    from engine.data import OBJECT_COLORS

    for scene, frame in heldout_frames(4):
        truth = check_frame(frame, scene)
        assert 0.02 < truth.object_area < 0.5 and truth.named_share > 0.6
        # the lower half of the frame painted in stripes of the named colours, at full brightness
        flooded = frame.copy()
        names = [obj.color_name for obj in scene.objects]
        rows = np.arange(48, 96)
        for k, row in enumerate(rows):
            flooded[row] = OBJECT_COLORS[names[k % len(names)]]
        check = check_frame(flooded, scene)
        assert all(check.colors_visible.values())  # what the colour check alone would accept
        assert check.object_area > 0.45 and check.object_area > 2 * truth.object_area
        # flooded with a colour the caption does not name: its share of the object pixels drops
        unnamed = next(c for c in OBJECT_COLORS if c not in names)
        other = frame.copy()
        other[48:] = OBJECT_COLORS[unnamed]
        assert check_frame(other, scene).named_share < 0.3
    sky = np.broadcast_to(np.asarray(SKY_COLORS[scene.sky_color_name]), frame.shape)
    blank = check_frame(sky, scene)
    assert blank.object_area == 0.0 and blank.named_share == 0.0
