"""The default model's tokenizer over the world's words, and out-of-vocabulary reporting."""

from engine.data import OBJECT_COLORS, OBJECT_SHAPES, SyntheticClipDataset, generate_scene
from engine.generator.text import (
    build_text_encoder,
    build_tokenizer,
    encode_texts,
    unknown_words,
    unknown_words_message,
    world_words,
)
from engine.pipeline.settings import DEFAULT_NEGATIVE_PROMPT, ORBIT_PROMPT_TEMPLATE


def test_every_caption_template_and_negative_prompt_word_is_known():
    tokenizer = build_tokenizer()
    heldout = SyntheticClipDataset(30, split="heldout")
    captions = [generate_scene(seed).caption for seed in range(60)]
    captions += [generate_scene(heldout.item_seed(i)).caption for i in range(30)]
    for caption in captions:
        text = ORBIT_PROMPT_TEMPLATE.format(prompt=caption)
        assert unknown_words(tokenizer, text) == []
        assert tokenizer.unk_token_id not in tokenizer(text).input_ids
    assert unknown_words(tokenizer, DEFAULT_NEGATIVE_PROMPT) == []
    assert set(OBJECT_COLORS) | set(OBJECT_SHAPES) <= set(world_words())


def test_unknown_words_are_reported_not_dropped():
    tokenizer = build_tokenizer()
    assert unknown_words(tokenizer, "A red Chair in a sunny garden, left of the chair.") == ["chair", "sunny", "garden"]
    assert unknown_words_message(["chair", "garden"]).startswith("the model does not know: chair, garden")
    ids = tokenizer("a red chair").input_ids
    assert ids.count(tokenizer.unk_token_id) == 1  # the word becomes <unk>, it does not vanish
    # Case and punctuation do not matter; each known word is one token (plus "</s>").
    assert tokenizer("Red, CUBE.").input_ids == tokenizer("red, cube.").input_ids
    assert len(tokenizer("a magenta snowman").input_ids) == 4


def test_text_encoder_embeddings_are_zero_after_the_prompt():
    tokenizer = build_tokenizer()
    encoder = build_text_encoder(len(tokenizer), dim=16, layers=1)
    embeddings = encode_texts(tokenizer, encoder, ["a red cube", "a blue house on a grey floor"], 12)
    assert embeddings.shape == (2, 12, 16)
    assert embeddings[0, 4:].abs().max() == 0 and embeddings[0, :4].abs().min() > 0
    assert embeddings[1, :8].abs().sum(dim=-1).min() > 0 and embeddings[1, 8:].abs().max() == 0
