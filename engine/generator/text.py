"""The default model's tokenizer and text encoder: a UMT5 encoder over the procedural world's words.

Tokenizer: a ``PreTrainedTokenizerFast`` over a ``tokenizer.json`` in UMT5's layout (Unigram model,
Metaspace pre-tokenizer, "</s>" appended) with a lower-casing normaliser (the T5 tokenizer classes rebuild
the backend from the vocabulary on load and would drop it), whose vocabulary is the whole words of the world's captions (:func:`world_words`), of the
pipeline's orbit template and of its default negative prompt, plus a few punctuation marks. There is no
character fallback: a word outside the vocabulary becomes ``<unk>``, which :func:`unknown_words` reports
("the default model does not know: chair, garden") instead of letting it vanish silently.

Text encoder: ``UMT5EncoderModel`` (the class of Wan 2.1's text encoder, small). No pretrained UMT5
weights can be obtained here, and a frozen *random* encoder would leave the generator unable to tell
which colour goes with which object: Wan's cross-attention has no positions on the text side, so
binding "red" to "cube" has to happen inside the encoder. The encoder is therefore trained jointly with
the transformer by ``train video`` (from a seeded initialisation) and frozen afterwards, as Wan's is at
generation time. Its output is the last hidden state with padding positions set to zero, over
``MAX_TEXT_TOKENS`` positions, exactly as the pipeline feeds Wan.
"""

from __future__ import annotations

import re
from functools import lru_cache

import torch

# Words of captions that engine.data cannot produce but that the world uses in its sentences.
_CAPTION_GLUE = "a an the and on of to in floor sky under left right front behind"
_PUNCTUATION = (",", ".", ":", ";", "-", "'")
TEXT_DIM = 64
WORD_PATTERN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@lru_cache(maxsize=1)
def world_words() -> tuple[str, ...]:
    """Every lower-case word the tokenizer knows, sorted: the world's captions, the orbit template and
    the default negative prompt."""
    from engine.data import FLOOR_COLORS, OBJECT_COLORS, OBJECT_SHAPES, SKY_COLORS
    from engine.pipeline.settings import DEFAULT_NEGATIVE_PROMPT, ORBIT_PROMPT_TEMPLATE

    words = set(_CAPTION_GLUE.split())
    for name in (*OBJECT_COLORS, *FLOOR_COLORS, *OBJECT_SHAPES, *SKY_COLORS):
        words.update(name.split())
    template = ORBIT_PROMPT_TEMPLATE.replace("{prompt}", "")
    for text in (template, DEFAULT_NEGATIVE_PROMPT):
        words.update(WORD_PATTERN.findall(text.lower()))
    return tuple(sorted(words))


def build_tokenizer(words=None):
    """``PreTrainedTokenizerFast`` over ``words`` (default :func:`world_words`); ids 0, 1, 2 = <pad>, </s>, <unk>."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = world_words() if words is None else tuple(words)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + word, -1.0) for word in words]
    vocab += [(mark, -2.0) for mark in _PUNCTUATION] + [("\u2581" + mark, -2.5) for mark in _PUNCTUATION]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", padding_side="right"
    )


def build_text_encoder(vocab_size: int, seed: int = 0, dim: int = TEXT_DIM, layers: int = 2):
    """A small ``UMT5EncoderModel`` (d_model ``dim``, 4 heads, ``layers`` layers), seeded."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=vocab_size,
            d_model=dim,
            d_kv=dim // 4,
            d_ff=2 * dim,
            num_layers=layers,
            num_heads=4,
            relative_attention_num_buckets=16,
            relative_attention_max_distance=64,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def unknown_words(tokenizer, text: str) -> list[str]:
    """Words of ``text`` (lower-cased, in order, without repeats) that ``tokenizer`` maps to its unknown token.

    Works for any tokenizer with an ``unk_token_id``; an open-vocabulary tokenizer (the real UMT5's
    SentencePiece) practically never produces it, so this reports only for closed vocabularies.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return []
    found = []
    for word in WORD_PATTERN.findall(text.lower()):
        if word in found:
            continue
        if unk in tokenizer(word, add_special_tokens=False).input_ids:
            found.append(word)
    return found


def unknown_words_message(words: list[str]) -> str:
    """The sentence shown to the user, e.g. "the model does not know: chair, garden"."""
    return f"the model does not know: {', '.join(words)} (these words are ignored)"


def encode_texts(tokenizer, text_encoder, texts: list[str], max_length: int) -> torch.Tensor:
    """(B, max_length, D) last hidden states with padding positions zero (as ``Vist3aPipeline.encode_text``)."""
    tokens = tokenizer(
        texts,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    hidden = text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
    return hidden * tokens.attention_mask[..., None].to(hidden.dtype)
