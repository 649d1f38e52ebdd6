"""Quality scorers: open_clip conversion against an independent reference, on-disk formats, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from engine.alignment.scorers import (
    CLIP_MEAN,
    CLIP_STD,
    SCORERS,
    CLIPScorer,
    RewardWeightsMissing,
    load_scorer,
    load_tokenizer,
    openclip_to_transformers,
)
from engine.testing.tiny import build_tiny_clip_scorer, build_tiny_tokenizer

WIDTH, LAYERS, HEADS, PATCH, IMAGE, EMBED, CONTEXT = 32, 2, 2, 8, 32, 16, 77
PROMPTS = ["a red chair", "the cat on a green table"]


def random_open_clip_state(vocab: int, seed: int = 0, width: int = WIDTH) -> dict[str, torch.Tensor]:
    """A random open_clip ViT CLIP state dict (its key names and layouts)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    state = {
        "visual.conv1.weight": r(width, 3, PATCH, PATCH),
        "visual.class_embedding": r(width),
        "visual.positional_embedding": r((IMAGE // PATCH) ** 2 + 1, width),
        "visual.proj": r(width, EMBED),
        "token_embedding.weight": r(vocab, width),
        "positional_embedding": r(CONTEXT, width),
        "text_projection": r(width, EMBED),
        "logit_scale": torch.tensor(4.0),
        "attn_mask": torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1),
    }
    for norm in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        state[f"{norm}.weight"], state[f"{norm}.bias"] = 1 + r(width), r(width)
    for tower in ("visual.transformer", "transformer"):
        for i in range(LAYERS):
            p = f"{tower}.resblocks.{i}."
            state[p + "attn.in_proj_weight"], state[p + "attn.in_proj_bias"] = r(3 * width, width), r(3 * width)
            state[p + "attn.out_proj.weight"], state[p + "attn.out_proj.bias"] = r(width, width), r(width)
            for norm in ("ln_1", "ln_2"):
                state[p + norm + ".weight"], state[p + norm + ".bias"] = 1 + r(width), r(width)
            state[p + "mlp.c_fc.weight"], state[p + "mlp.c_fc.bias"] = r(4 * width, width), r(4 * width)
            state[p + "mlp.c_proj.weight"], state[p + "mlp.c_proj.bias"] = r(width, 4 * width), r(width)
    return state


def open_clip_config(quick_gelu: bool) -> dict:
    return {
        "model_cfg": {
            "embed_dim": EMBED,
            "quick_gelu": quick_gelu,
            "vision_cfg": {
                "image_size": IMAGE,
                "layers": LAYERS,
                "width": WIDTH,
                "head_width": WIDTH // HEADS,
                "patch_size": PATCH,
            },
            "text_cfg": {"context_length": CONTEXT, "width": WIDTH, "heads": HEADS, "layers": LAYERS},
        }
    }


# ---- an independent reference of open_clip's forward, written from its definition -----------------
def _norm(x, s, name):
    return F.layer_norm(x, (x.shape[-1],), s[name + ".weight"], s[name + ".bias"], 1e-5)


def _block(x, s, p, quick, causal, heads):
    h = _norm(x, s, p + "ln_1")
    q, k, v = (h @ s[p + "attn.in_proj_weight"].t() + s[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
    n, length, _ = x.shape
    q, k, v = (t.reshape(n, length, heads, -1).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
    if causal:
        scores = scores + torch.full((length, length), float("-inf")).triu(1)
    attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, -1)
    x = x + attn @ s[p + "attn.out_proj.weight"].t() + s[p + "attn.out_proj.bias"]
    h = _norm(x, s, p + "ln_2") @ s[p + "mlp.c_fc.weight"].t() + s[p + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h) if quick else F.gelu(h)
    return x + h @ s[p + "mlp.c_proj.weight"].t() + s[p + "mlp.c_proj.bias"]


def reference_image(s, pixels, quick, heads=HEADS):
    x = F.conv2d(pixels, s["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([s["visual.class_embedding"].expand(x.shape[0], 1, -1), x], 1) + s["visual.positional_embedding"]
    x = _norm(x, s, "visual.ln_pre")
    for i in range(LAYERS):
        x = _block(x, s, f"visual.transformer.resblocks.{i}.", quick, causal=False, heads=heads)
    return _norm(x[:, 0], s, "visual.ln_post") @ s["visual.proj"]


def reference_text(s, ids, quick, heads=HEADS):
    x = s["token_embedding.weight"][ids] + s["positional_embedding"][: ids.shape[1]]
    for i in range(LAYERS):
        x = _block(x, s, f"transformer.resblocks.{i}.", quick, causal=True, heads=heads)
    x = _norm(x, s, "ln_final")
    return x[torch.arange(ids.shape[0]), ids.argmax(-1)] @ s["text_projection"]  # pooled at the EOT (max id)


def reference_score(s, tokenizer, images, prompts, quick, crop, pickscore=False, heads=HEADS):
    """The scorer's definition: preprocessing, open_clip features, cosine (× e^logit_scale)."""
    if crop:  # shorter side to IMAGE, centre crop
        h, w = images.shape[-2:]
        nh, nw = round(h * IMAGE / min(h, w)), round(w * IMAGE / min(h, w))
        x = F.interpolate(images, size=(nh, nw), mode="bicubic", antialias=True)
        x = x[..., (nh - IMAGE) // 2 : (nh - IMAGE) // 2 + IMAGE, (nw - IMAGE) // 2 : (nw - IMAGE) // 2 + IMAGE]
    else:
        x = F.interpolate(images, size=(IMAGE, IMAGE), mode="bicubic", antialias=True)
    x = (x.clamp(0, 1) - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    image = F.normalize(reference_image(s, x, quick, heads), dim=-1)
    ids = torch.tensor(tokenizer(list(prompts), padding="max_length", max_length=CONTEXT)["input_ids"])
    text = F.normalize(reference_text(s, ids, quick, heads), dim=-1)
    cosine = (image * text).sum(-1)
    return s["logit_scale"].exp() * cosine if pickscore else cosine


def _features(output):
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_clip_scorer(image_size=32)


@pytest.mark.parametrize("quick", [False, True])
def test_open_clip_conversion_matches_the_reference_forward(tokenizer, quick):
    from transformers import CLIPModel

    state = random_open_clip_state(len(tokenizer))
    config, converted = openclip_to_transformers(state, open_clip_config(quick))
    assert config.vision_config.hidden_act == ("quick_gelu" if quick else "gelu")
    assert config.text_config.eos_token_id == config.text_config.pad_token_id == len(tokenizer) - 1
    model = CLIPModel(config).eval()
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing)

    pixels = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    tokens = tokenizer(PROMPTS, padding="max_length", max_length=CONTEXT)
    ids = torch.tensor(tokens["input_ids"])
    with torch.no_grad():
        image = _features(model.get_image_features(pixel_values=pixels))
        text = _features(model.get_text_features(input_ids=ids, attention_mask=torch.tensor(tokens["attention_mask"])))
        assert torch.allclose(image, reference_image(state, pixels, quick), atol=1e-5)
        assert torch.allclose(text, reference_text(state, ids, quick), atol=1e-5)
        assert not torch.allclose(image, reference_image(state, pixels, not quick), atol=1e-3)  # the act matters


def test_conversion_infers_the_architecture_from_shapes(tokenizer):
    from transformers import CLIPModel

    state = random_open_clip_state(len(tokenizer), width=128)  # 128 / 64 = 2 heads in both towers
    config, converted = openclip_to_transformers(state, None)
    assert (config.vision_config.num_attention_heads, config.text_config.num_attention_heads) == (2, 2)
    assert (config.vision_config.num_hidden_layers, config.text_config.num_hidden_layers) == (LAYERS, LAYERS)
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (IMAGE, PATCH)
    assert (config.text_config.vocab_size, config.text_config.max_position_embeddings) == (len(tokenizer), CONTEXT)
    assert config.projection_dim == EMBED and config.vision_config.hidden_act == "gelu"
    model = CLIPModel(config).eval()
    model.load_state_dict(converted, strict=False)
    pixels = torch.randn(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3))
    ids = torch.tensor(tokenizer(PROMPTS[:1])["input_ids"])
    with torch.no_grad():
        assert torch.allclose(
            _features(model.get_image_features(pixel_values=pixels)), reference_image(state, pixels, False), atol=1e-5
        )
        assert torch.allclose(
            _features(model.get_text_features(input_ids=ids)), reference_text(state, ids, False), atol=1e-5
        )


def test_conversion_accepts_wrappers_and_names_unknown_keys(tokenizer):
    state = random_open_clip_state(len(tokenizer))
    wrapped = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}
    _, plain = openclip_to_transformers(state, open_clip_config(False))
    _, unwrapped = openclip_to_transformers(wrapped, open_clip_config(False))
    assert plain.keys() == unwrapped.keys() and all(torch.equal(plain[k], unwrapped[k]) for k in plain)
    assert not any("attn_mask" in k or "logit_bias" in k for k in plain)
    _, with_bias = openclip_to_transformers({**state, "logit_bias": torch.tensor(-10.0)}, open_clip_config(False))
    assert with_bias.keys() == plain.keys()
    with pytest.raises(ValueError, match="visual.extra_head.weight"):
        openclip_to_transformers({**state, "visual.extra_head.weight": torch.zeros(1)}, open_clip_config(False))
    with pytest.raises(ValueError, match="transformer.resblocks.0.attn.gate"):
        openclip_to_transformers({**state, "transformer.resblocks.0.attn.gate": torch.zeros(1)}, None)
    config = open_clip_config(False)
    config["model_cfg"]["vision_cfg"]["image_size"] = [IMAGE, IMAGE]  # open_clip also writes sizes as pairs
    assert openclip_to_transformers(state, config)[0].vision_config.image_size == IMAGE
    config["model_cfg"]["vision_cfg"]["patch_size"] = 14
    with pytest.raises(ValueError, match="vision_cfg.patch_size=14"):
        openclip_to_transformers(state, config)


def _write_open_clip(folder, state, file_name, quick=None):
    folder.mkdir(parents=True)
    torch.save(state, folder / file_name)
    if quick is not None:
        (folder / "open_clip_config.json").write_text(json.dumps(open_clip_config(quick)))
    return folder


def test_each_scorer_loads_from_its_on_disk_format(tokenizer, tmp_path):
    from transformers import CLIPModel

    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(str(tok_dir))
    state = random_open_clip_state(len(tokenizer))
    dfn = _write_open_clip(tmp_path / "dfn", state, "open_clip_pytorch_model.bin", quick=True)
    # HPSv2.1 ships no open_clip_config.json: the architecture is inferred (128 wide: 2 heads of 64), GELU
    wide = random_open_clip_state(len(tokenizer), seed=1, width=128)
    hps_state = {"state_dict": {"module." + k: v for k, v in wide.items()}, "epoch": 1}
    hps = _write_open_clip(tmp_path / "hps", hps_state, "HPS_v2.1_compressed.pt")
    pick = tmp_path / "pick"
    config, converted = openclip_to_transformers(state, open_clip_config(False))
    pick_model = CLIPModel(config)
    pick_model.load_state_dict(converted, strict=False)
    pick_model.save_pretrained(str(pick))
    assert (pick / "config.json").is_file() and any(pick.glob("model*.safetensors"))

    images = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    expected = {
        "dfn-clip": reference_score(state, tokenizer, images, PROMPTS, quick=True, crop=False),
        "hpsv2.1": reference_score(wide, tokenizer, images, PROMPTS, quick=False, crop=True),
        "pickscore": reference_score(state, tokenizer, images, PROMPTS, quick=False, crop=True, pickscore=True),
    }
    for name, folder in (("dfn-clip", dfn), ("hpsv2.1", hps), ("pickscore", pick)):
        scorer = load_scorer(name, folder, tokenizer=tok_dir)
        assert isinstance(scorer, CLIPScorer) and scorer.name == name and scorer.crop == SCORERS[name].crop
        x = images.clone().requires_grad_(True)
        scores = scorer(x, PROMPTS)
        assert scores.dtype == torch.float32 and scores.shape == (2,)
        assert torch.allclose(scores, expected[name], atol=1e-4), name
        scores.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert all(not p.requires_grad and p.grad is None for p in scorer.parameters())
        assert not scorer.training and not scorer.train().training
    # a weights file given directly; a DFN file without open_clip_config.json still gets QuickGELU
    by_file = load_scorer("hpsv2.1", hps / "HPS_v2.1_compressed.pt", tokenizer=tokenizer)
    assert torch.allclose(by_file(images, PROMPTS), expected["hpsv2.1"], atol=1e-4)
    bare = _write_open_clip(tmp_path / "dfn_bare", wide, "open_clip_pytorch_model.bin")
    expected_bare = reference_score(wide, tokenizer, images, PROMPTS, quick=True, crop=False)
    assert torch.allclose(load_scorer("dfn-clip", bare, tokenizer=tok_dir)(images, PROMPTS), expected_bare, atol=1e-4)


def test_scores_are_the_cosine_and_differentiable_in_the_images(tiny):
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    prompts = ["a red chair", "a cat", "a red chair"]
    scores = tiny(images, prompts)
    with torch.no_grad():
        image = tiny.image_features(images)
        text = tiny.text_features(prompts)
    assert torch.allclose(scores, (image * text).sum(-1), atol=1e-6)
    assert torch.allclose(image.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert scores.abs().max() <= 1.0
    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in tiny.parameters())

    pick = CLIPScorer(tiny.model, tiny.tokenizer, name="pick", image_size=32, crop=False, output="pickscore")
    assert torch.allclose(pick(images, prompts), tiny.model.logit_scale.exp() * scores.detach(), atol=1e-5)


def test_text_features_are_cached_per_prompt(tiny, monkeypatch):
    scorer = build_tiny_clip_scorer(seed=1)
    calls = []
    original = scorer.model.get_text_features

    def counting(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    monkeypatch.setattr(scorer.model, "get_text_features", counting)
    first = scorer(torch.rand(2, 3, 32, 32), ["a cat", "a dog"])
    assert calls == [2]
    scorer(torch.rand(3, 3, 32, 32), ["a dog", "a cat", "a blue car"])
    assert calls == [2, 1]  # only the new prompt is encoded
    with torch.no_grad():
        text = _features(original(**scorer.tokenizer(["a cat"], return_tensors="pt")))
    assert torch.allclose(scorer.text_features(["a cat"])[0], F.normalize(text, dim=-1)[0], atol=1e-6)
    assert first.shape == (2,)


def test_crop_sees_only_the_centre_and_resize_sees_everything(tiny):
    crop = CLIPScorer(tiny.model, tiny.tokenizer, name="crop", image_size=32, crop=True)
    image = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    changed = image.clone()
    changed[..., :8] = 1.0 - changed[..., :8]  # the left border, outside the centre square
    assert torch.allclose(crop(image, ["a cat"]), crop(changed, ["a cat"]), atol=1e-6)
    assert not torch.allclose(tiny(image, ["a cat"]), tiny(changed, ["a cat"]), atol=1e-4)
    assert crop.preprocess(image).shape == tiny.preprocess(image).shape == (1, 3, 32, 32)


def test_bad_inputs_are_named(tiny):
    with pytest.raises(ValueError, match="one prompt per image"):
        tiny(torch.rand(2, 3, 32, 32), ["only one"])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tiny(torch.rand(3, 32, 32), ["x"])
    with pytest.raises(ValueError, match="floating point"):
        tiny(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), ["x"])
    with pytest.raises(ValueError, match="strings"):
        tiny(torch.rand(1, 3, 32, 32), [3])
    with pytest.raises(ValueError, match="unknown scorer 'aesthetic'"):
        load_scorer("aesthetic")


def test_missing_weights_are_named_with_where_to_get_them(tmp_path, monkeypatch, tokenizer):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RewardWeightsMissing, match=r"HPS_v2.1_compressed.pt in .*empty.*xswu/HPSv2.*--hps"):
        load_scorer("hpsv2.1", empty)
    with pytest.raises(RewardWeightsMissing, match="open_clip_pytorch_model.bin.*apple/DFN5B-CLIP-ViT-H-14-378"):
        load_scorer("dfn-clip", empty)
    with pytest.raises(RewardWeightsMissing, match="does not exist"):
        load_scorer("pickscore", tmp_path / "nowhere" / "x")
    pick_file = tmp_path / "pick" / "model.safetensors"
    pick_file.parent.mkdir()
    pick_file.write_bytes(b"")
    with pytest.raises(RewardWeightsMissing, match="config.json"):
        load_scorer("pickscore", pick_file)
    with pytest.raises(RewardWeightsMissing, match="tokenizer.*vocab.json"):
        load_tokenizer(empty)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(RewardWeightsMissing, match="model.safetensors or pytorch_model.bin.*PickScore_v1.*OFFLINE"):
        load_scorer("pickscore")
    with pytest.raises(RewardWeightsMissing, match="HPS_v2.1_compressed.pt.*someone/no-such-hps.*OFFLINE"):
        load_scorer("hpsv2.1", "someone/no-such-hps")
    with pytest.raises(RewardWeightsMissing, match="laion/CLIP-ViT-H-14-laion2B-s32B-b79K"):
        load_tokenizer()
    assert issubclass(RewardWeightsMissing, FileNotFoundError)


def test_weights_that_do_not_fit_are_refused(tokenizer, tmp_path):
    state = random_open_clip_state(len(tokenizer))
    del state["transformer.resblocks.1.ln_2.bias"]
    folder = _write_open_clip(tmp_path / "dfn", state, "open_clip_pytorch_model.bin", quick=True)
    with pytest.raises(ValueError, match=r"do not fit.*text_model\.encoder\.layers\.1\.layer_norm2\.bias"):
        load_scorer("dfn-clip", folder, tokenizer=tokenizer)
