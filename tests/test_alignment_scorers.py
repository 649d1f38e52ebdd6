"""Quality scorers: open_clip conversion against an independent reference, on-disk formats, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from engine.alignment.scorers import (
    CLIPScorer,
    RewardWeightsMissing,
    build_tiny_clip_scorer,
    build_tiny_tokenizer,
    load_scorer,
    openclip_to_transformers,
)

WIDTH, LAYERS, HEADS, PATCH, IMAGE, EMBED, CONTEXT = 32, 2, 2, 8, 32, 16, 77


def random_open_clip_state(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random open_clip ViT CLIP state dict (its key names and layouts)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    state = {
        "visual.conv1.weight": r(WIDTH, 3, PATCH, PATCH),
        "visual.class_embedding": r(WIDTH),
        "visual.positional_embedding": r((IMAGE // PATCH) ** 2 + 1, WIDTH),
        "visual.proj": r(WIDTH, EMBED),
        "token_embedding.weight": r(vocab, WIDTH),
        "positional_embedding": r(CONTEXT, WIDTH),
        "text_projection": r(WIDTH, EMBED),
        "logit_scale": torch.tensor(4.0),
        "attn_mask": torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1),
    }
    for norm in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        state[f"{norm}.weight"], state[f"{norm}.bias"] = 1 + r(WIDTH), r(WIDTH)
    for tower in ("visual.transformer", "transformer"):
        for i in range(LAYERS):
            p = f"{tower}.resblocks.{i}."
            state[p + "attn.in_proj_weight"], state[p + "attn.in_proj_bias"] = r(3 * WIDTH, WIDTH), r(3 * WIDTH)
            state[p + "attn.out_proj.weight"], state[p + "attn.out_proj.bias"] = r(WIDTH, WIDTH), r(WIDTH)
            for norm in ("ln_1", "ln_2"):
                state[p + norm + ".weight"], state[p + norm + ".bias"] = 1 + r(WIDTH), r(WIDTH)
            state[p + "mlp.c_fc.weight"], state[p + "mlp.c_fc.bias"] = r(4 * WIDTH, WIDTH), r(4 * WIDTH)
            state[p + "mlp.c_proj.weight"], state[p + "mlp.c_proj.bias"] = r(WIDTH, 4 * WIDTH), r(WIDTH)
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


def _block(x, s, p, quick, causal):
    h = _norm(x, s, p + "ln_1")
    q, k, v = (h @ s[p + "attn.in_proj_weight"].t() + s[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
    n, length, _ = x.shape
    q, k, v = (t.reshape(n, length, HEADS, -1).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
    if causal:
        scores = scores + torch.full((length, length), float("-inf")).triu(1)
    attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, -1)
    x = x + attn @ s[p + "attn.out_proj.weight"].t() + s[p + "attn.out_proj.bias"]
    h = _norm(x, s, p + "ln_2") @ s[p + "mlp.c_fc.weight"].t() + s[p + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h) if quick else F.gelu(h)
    return x + h @ s[p + "mlp.c_proj.weight"].t() + s[p + "mlp.c_proj.bias"]


def reference_image(s, pixels, quick):
    x = F.conv2d(pixels, s["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([s["visual.class_embedding"].expand(x.shape[0], 1, -1), x], 1) + s["visual.positional_embedding"]
    x = _norm(x, s, "visual.ln_pre")
    for i in range(LAYERS):
        x = _block(x, s, f"visual.transformer.resblocks.{i}.", quick, causal=False)
    return _norm(x[:, 0], s, "visual.ln_post") @ s["visual.proj"]


def reference_text(s, ids, quick):
    x = s["token_embedding.weight"][ids] + s["positional_embedding"][: ids.shape[1]]
    for i in range(LAYERS):
        x = _block(x, s, f"transformer.resblocks.{i}.", quick, causal=True)
    x = _norm(x, s, "ln_final")
    return x[torch.arange(ids.shape[0]), ids.argmax(-1)] @ s["text_projection"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("quick", [False, True])
def test_open_clip_conversion_matches_the_reference_forward(tokenizer, quick):
    from transformers import CLIPModel

    state = random_open_clip_state(len(tokenizer))
    config, converted = openclip_to_transformers(state, open_clip_config(quick))
    assert config.vision_config.hidden_act == ("quick_gelu" if quick else "gelu")
    model = CLIPModel(config).eval()
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing)

    pixels = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    tokens = tokenizer(["a red chair", "the cat on a green table"], padding="max_length", max_length=CONTEXT)
    ids = torch.tensor(tokens["input_ids"])
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=ids, attention_mask=torch.tensor(tokens["attention_mask"]))
        image = image if isinstance(image, torch.Tensor) else image.pooler_output
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
        assert torch.allclose(image, reference_image(state, pixels, quick), atol=1e-5)
        assert torch.allclose(text, reference_text(state, ids, quick), atol=1e-5)


def test_conversion_accepts_wrappers_and_names_unknown_keys(tokenizer):
    state = random_open_clip_state(len(tokenizer))
    wrapped = {"state_dict": {"module." + k: v for k, v in state.items()}}
    _, plain = openclip_to_transformers(state, open_clip_config(False))
    _, unwrapped = openclip_to_transformers(wrapped, open_clip_config(False))
    assert plain.keys() == unwrapped.keys() and all(torch.equal(plain[k], unwrapped[k]) for k in plain)
    with pytest.raises(ValueError, match="visual.extra_head.weight"):
        openclip_to_transformers({**state, "visual.extra_head.weight": torch.zeros(1)}, open_clip_config(False))


def _write_open_clip(folder, state, file_name, quick=False):
    folder.mkdir(parents=True)
    torch.save(state, folder / file_name)
    (folder / "open_clip_config.json").write_text(json.dumps(open_clip_config(quick)))
    return folder


def test_each_scorer_loads_from_its_on_disk_format(tokenizer, tmp_path):
    from transformers import CLIPModel

    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(str(tok_dir))
    state = random_open_clip_state(len(tokenizer))
    dfn = _write_open_clip(tmp_path / "dfn", state, "open_clip_pytorch_model.bin", quick=True)
    hps = _write_open_clip(
        tmp_path / "hps", {"state_dict": {"module." + k: v for k, v in state.items()}}, "HPS_v2.1_compressed.pt"
    )
    pick = tmp_path / "pick"
    config, converted = openclip_to_transformers(state, open_clip_config(False))
    pick_model = CLIPModel(config)
    pick_model.load_state_dict(converted, strict=False)
    pick_model.save_pretrained(str(pick))

    images = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    prompts = ["a red chair", "a blue car"]
    scores = {}
    for name, folder in (("dfn-clip", dfn), ("hpsv2.1", hps), ("pickscore", pick)):
        scorer = load_scorer(name, folder, tokenizer=tok_dir)
        assert isinstance(scorer, CLIPScorer) and scorer.name == name
        scores[name] = scorer(images, prompts)
        assert scores[name].shape == (2,) and torch.isfinite(scores[name]).all()
        assert not any(p.requires_grad for p in scorer.parameters())
    # DFN (quick_gelu) and HPS (gelu) differ only by the activation and preprocessing; PickScore is the
    # HPS network scaled by logit_scale.exp() = e^4.
    assert torch.allclose(scores["pickscore"], torch.exp(torch.tensor(4.0)) * scores["hpsv2.1"], atol=1e-4)
    assert not torch.allclose(scores["dfn-clip"], scores["hpsv2.1"])
    assert load_scorer("hpsv2.1", hps / "HPS_v2.1_compressed.pt", tokenizer=tok_dir)(images, prompts).allclose(
        scores["hpsv2.1"]
    )


def test_scores_are_the_cosine_and_differentiable_in_the_images(tmp_path):
    scorer = build_tiny_clip_scorer(tmp_path, image_size=32)
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    prompts = ["a red chair", "a cat", "a red chair"]
    scores = scorer(images, prompts)
    with torch.no_grad():
        image = scorer.image_features(images)
        text = scorer.text_features(prompts)
    assert torch.allclose(scores, (image * text).sum(-1), atol=1e-6)
    assert torch.allclose(image.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert scores.abs().max() <= 1.0
    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in scorer.parameters())

    pick = CLIPScorer(scorer.model, scorer.tokenizer, name="pick", image_size=32, crop=False, output="pickscore")
    assert torch.allclose(pick(images, prompts), scorer.model.logit_scale.exp() * scores.detach(), atol=1e-5)


def test_crop_sees_only_the_centre_and_resize_sees_everything(tmp_path):
    base = build_tiny_clip_scorer(tmp_path, image_size=32)
    crop = CLIPScorer(base.model, base.tokenizer, name="crop", image_size=32, crop=True)
    image = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    changed = image.clone()
    changed[..., :8] = 1.0 - changed[..., :8]  # the left border, outside the centre square
    assert torch.allclose(crop(image, ["a cat"]), crop(changed, ["a cat"]), atol=1e-6)
    assert not torch.allclose(base(image, ["a cat"]), base(changed, ["a cat"]), atol=1e-4)


def test_bad_inputs_and_missing_weights_are_named(tmp_path, monkeypatch):
    scorer = build_tiny_clip_scorer(tmp_path)
    with pytest.raises(ValueError, match="one prompt per image"):
        scorer(torch.rand(2, 3, 32, 32), ["only one"])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        scorer(torch.rand(3, 32, 32), ["x"])
    with pytest.raises(ValueError, match="unknown scorer 'aesthetic'"):
        load_scorer("aesthetic")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RewardWeightsMissing, match="HPS_v2.1_compressed.pt"):
        load_scorer("hpsv2.1", empty)
    with pytest.raises(RewardWeightsMissing, match="open_clip_pytorch_model.bin"):
        load_scorer("dfn-clip", empty)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(RewardWeightsMissing, match="yuvalkirstain/PickScore_v1.*HF_HUB_OFFLINE"):
        load_scorer("pickscore")
    with pytest.raises(RewardWeightsMissing, match="does not exist"):
        load_scorer("pickscore", tmp_path / "nowhere" / "x")


def test_weights_that_do_not_fit_are_refused(tokenizer, tmp_path):
    state = random_open_clip_state(len(tokenizer))
    state["visual.proj"] = torch.zeros(WIDTH, EMBED + 1)
    folder = _write_open_clip(tmp_path / "dfn", state, "open_clip_pytorch_model.bin")
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    with pytest.raises(ValueError, match="do not fit"):
        load_scorer("dfn-clip", folder, tokenizer=tmp_path / "tok")
