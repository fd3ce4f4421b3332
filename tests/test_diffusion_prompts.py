"""A1111 prompt reading (weights, chunks, BREAK, comma backtrack, clip skip, embeddings) on the tiny SD-1.5 pipe.

Every expected tensor is computed here from the text encoder directly (or by diffusers' own encode_prompt), and
every expected parse is A1111's documented result — never this package's own output.
"""

from __future__ import annotations

import pytest
import torch

from pipelines.core.errors import UserError
from pipelines.diffusion.embeddings import Embedding, installed_embeddings, read_embedding
from pipelines.diffusion.prompts import (
    LoraTag,
    encode_prompts,
    extract_lora_tags,
    find_embedding_names,
    parse_weights,
)

WORDS = ["cat", "dog", "bird", "fish", "tree", "sky", "sun", "moon"]  # one CLIP token each


@pytest.fixture(scope="module")
def tiny_sd15(shared_cache_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASL_CACHE", str(shared_cache_dir))
        from pipelines.core.loader import load_model

        return load_model("diffusers_pipeline", "tiny:sd15")


@pytest.fixture(scope="module")
def pipe(tiny_sd15):
    """The tiny pipe's tokenizer and a copy of its text encoder whose final layer norm has a bias, as real CLIP's
    does: with the freshly initialised norm every chunk's mean is ~0, and A1111's renormalising divides by it."""
    import copy
    from types import SimpleNamespace

    text_encoder = copy.deepcopy(tiny_sd15.text_encoder)
    with torch.no_grad():
        noise = torch.randn(32, generator=torch.Generator().manual_seed(0))
        text_encoder.final_layer_norm.bias.copy_(0.3 + 0.1 * noise)
    return SimpleNamespace(tokenizer=tiny_sd15.tokenizer, text_encoder=text_encoder)


def words(count: int, start: int = 0) -> str:
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(count))


def encoder_output(pipe, ids: list[int] | str, clip_skip: int = 1) -> torch.Tensor:
    """[1, 77, D] straight from the text encoder: a text is tokenized and padded to 77 as the tokenizer does."""
    if isinstance(ids, str):
        ids = pipe.tokenizer(ids, padding="max_length", max_length=77, truncation=True).input_ids
    ids = ids + [pipe.tokenizer.eos_token_id] * (77 - len(ids))
    with torch.no_grad():
        out = pipe.text_encoder(torch.tensor([ids]), output_hidden_states=True)
        if clip_skip == 1:
            return out.last_hidden_state
        return pipe.text_encoder.final_layer_norm(out.hidden_states[-clip_skip])


def chunk_ids(pipe, text: str) -> list[int]:
    return pipe.tokenizer(text, add_special_tokens=False).input_ids


def assert_near(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(("text", "expected"), [  # the examples in A1111's parse_prompt_attention docstring
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
])
def test_parse_weights_matches_a1111_docstring(text, expected):
    assert parse_weights(text) == expected


def test_parse_weights_break_and_empty():
    assert parse_weights("a BREAK b") == [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]
    assert parse_weights("") == [("", 1.0)]


def test_extract_lora_tags_as_a1111():
    text, tags = extract_lora_tags("1girl, <lora:animeStyle:0.8>, smile <lyco:hair v2> <lora:x:te=0.3:unet=1>")
    assert text == "1girl, , smile  "
    assert tags == [LoraTag("animeStyle", 0.8), LoraTag("hair v2", 1.0), LoraTag("x", 0.3)]
    with pytest.raises(UserError, match="not a number"):
        extract_lora_tags("<lora:x:strong>")


def test_find_embedding_names_uses_clip_word_boundaries():
    known = ["EasyNegative", "bad-hands-5", "style", "unused"]
    prompt = "(bad-hands-5:1.2), easynegative, stylestyle <lora:style:1>"
    assert find_embedding_names(prompt, known) == ["bad-hands-5", "EasyNegative"]


# ---------------------------------------------------------------------------------------------- weights
def test_weighted_word_is_a1111_weighted_and_renormalised(pipe):
    plain_text, weighted_text = "a house on a hill", "a (house:1.5) on a hill"
    ids = pipe.tokenizer(plain_text, padding="max_length", max_length=77).input_ids
    z_plain = encoder_output(pipe, ids)
    house = torch.tensor([token == chunk_ids(pipe, "house")[0] for token in ids])
    w = torch.where(house, 1.5, 1.0).reshape(1, 77, 1)
    expected = z_plain * w * (z_plain.mean() / (z_plain * w).mean())

    weighted = encode_prompts(pipe, weighted_text).cond
    plain = encode_prompts(pipe, plain_text).cond
    assert_near(plain, z_plain)
    assert_near(weighted, expected)
    # Apart from the chunk-wide renormalising factor, only the house token moved.
    factor = z_plain.mean() / (z_plain * w).mean()
    assert_near(weighted[:, ~house], plain[:, ~house] * factor)
    assert not torch.allclose(weighted[:, house], plain[:, house] * factor)


def test_matches_diffusers_encode_prompt_for_plain_prompts(tiny_sd15):
    # (diffusers' own clip_skip reaches for `text_encoder.text_model`, gone from transformers 5's CLIPTextModel)
    ours = encode_prompts(tiny_sd15, "a cat on a hill", "ugly")
    theirs, negative = tiny_sd15.encode_prompt("a cat on a hill", "cpu", 1, True, "ugly")
    assert_near(ours.cond, theirs)
    assert_near(ours.uncond, negative)


# ---------------------------------------------------------------------------------------------- chunks
def test_200_token_prompt_is_three_chunks_and_last_word_counts(pipe):
    prompt = words(200)
    assert len(chunk_ids(pipe, prompt)) == 200
    embeds = encode_prompts(pipe, prompt)
    assert embeds.cond.shape == (1, 231, 32) and embeds.chunks == 3 and embeds.tokens == 200
    ids = chunk_ids(pipe, prompt)
    for index in range(3):
        expected = encoder_output(pipe, [49406, *ids[75 * index:75 * index + 75], 49407])
        assert_near(embeds.cond[:, 77 * index:77 * index + 77], expected)

    changed = encode_prompts(pipe, prompt.rsplit(" ", 1)[0] + " house").cond
    torch.testing.assert_close(changed[:, :154], embeds.cond[:, :154], rtol=0, atol=0)
    assert not torch.allclose(changed[:, 154:], embeds.cond[:, 154:])


def test_break_starts_a_new_chunk(pipe):
    embeds = encode_prompts(pipe, "a cat BREAK a dog")
    assert embeds.chunks == 2
    assert_near(embeds.cond, torch.cat([encoder_output(pipe, "a cat"), encoder_output(pipe, "a dog")], dim=1))


def test_comma_backtrack_moves_words_after_a_near_comma(pipe):
    # 70 words, a comma, 10 words: token 76 would split 4 words after the comma (<= 20 back) -> break at the comma.
    head, tail = words(70) + ",", words(10, start=3)
    embeds = encode_prompts(pipe, f"{head} {tail}")
    assert embeds.chunks == 2
    assert_near(embeds.cond, torch.cat([encoder_output(pipe, head), encoder_output(pipe, tail)], dim=1))


def test_far_comma_does_not_backtrack(pipe):
    prompt = words(40) + ", " + words(50, start=2)  # the comma is 35 tokens back when the chunk fills
    ids = chunk_ids(pipe, prompt)
    embeds = encode_prompts(pipe, prompt)
    expected = [encoder_output(pipe, [49406, *ids[:75], 49407]), encoder_output(pipe, [49406, *ids[75:], 49407])]
    assert_near(embeds.cond, torch.cat(expected, dim=1))


def test_uncond_padded_with_empty_chunks_and_empty_prompt_allowed(pipe):
    empty_chunk = encoder_output(pipe, "")
    assert pipe.tokenizer("", padding="max_length", max_length=77).input_ids == [49406] + [49407] * 76
    embeds = encode_prompts(pipe, words(100), "ugly")
    assert embeds.cond.shape == embeds.uncond.shape == (1, 154, 32)
    assert_near(embeds.uncond, torch.cat([encoder_output(pipe, "ugly"), empty_chunk], dim=1))

    empty = encode_prompts(pipe, "", "")
    assert empty.cond.shape == (1, 77, 32) and empty.tokens == 0
    assert_near(empty.cond, empty_chunk)
    assert_near(empty.uncond, empty_chunk)


def test_clip_skip_two_is_penultimate_layer_through_final_norm(pipe):
    z = encode_prompts(pipe, "a cat on a hill", clip_skip=2).cond
    assert_near(z, encoder_output(pipe, "a cat on a hill", clip_skip=2))
    assert not torch.allclose(z, encoder_output(pipe, "a cat on a hill"))
    with pytest.raises(UserError, match="Clip skip"):
        encode_prompts(pipe, "a cat", clip_skip=3)  # the tiny encoder has 2 layers
    with pytest.raises(UserError, match="Clip skip"):
        encode_prompts(pipe, "a cat", clip_skip=0)


# ---------------------------------------------------------------------------------------------- embeddings
def token_vectors(pipe, text: str) -> torch.Tensor:
    with torch.no_grad():
        return pipe.text_encoder.get_input_embeddings()(torch.tensor(chunk_ids(pipe, text))).clone()


def test_embedding_vectors_go_where_its_name_is(pipe):
    hooks = dict(pipe.text_encoder.get_input_embeddings()._forward_hooks)
    vocab_size = len(pipe.tokenizer)
    one = {"zqxemb": token_vectors(pipe, "house")}
    two = {"zqxemb": Embedding("zqxemb", token_vectors(pipe, "red house"))}  # an Embedding is accepted too
    assert_near(encode_prompts(pipe, "a zqxemb on a hill", embeddings=one).cond,
                encoder_output(pipe, "a house on a hill"))
    assert_near(encode_prompts(pipe, "a (zqxemb:1.3), hill", embeddings=two).cond,
                encode_prompts(pipe, "a (red house:1.3), hill").cond)
    # The shared pipe is as it was: no hook left, tokenizer unchanged, the name alone is just letters again.
    assert dict(pipe.text_encoder.get_input_embeddings()._forward_hooks) == hooks
    assert len(pipe.tokenizer) == vocab_size
    without = encode_prompts(pipe, "a zqxemb on a hill").cond
    assert not torch.allclose(without, encoder_output(pipe, "a house on a hill"))


def test_embedding_of_another_width_is_refused_only_when_used(pipe):
    wrong = {"zqxemb": torch.zeros(2, 768)}
    encode_prompts(pipe, "a cat", embeddings=wrong)
    with pytest.raises(UserError, match="zqxemb"):
        encode_prompts(pipe, "a cat", "zqxemb", embeddings=wrong)


def test_read_embedding_layouts(tmp_path):
    from safetensors.torch import save_file

    vectors = torch.randn(3, 32)
    save_file({"emb_params": vectors}, tmp_path / "a1111.safetensors")
    save_file({"<cat-toy>": vectors[0]}, tmp_path / "learned_embeds.safetensors")
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, tmp_path / "xl.safetensors")

    a1111 = read_embedding(tmp_path / "a1111.safetensors")
    assert a1111.name == "a1111" and a1111.count == 3
    torch.testing.assert_close(a1111.vectors, vectors)
    diffusers = read_embedding(tmp_path / "learned_embeds.safetensors")
    assert diffusers.name == "learned_embeds" and diffusers.vectors.shape == (1, 32)
    torch.testing.assert_close(diffusers.vectors[0], vectors[0])
    xl = read_embedding(tmp_path / "xl.safetensors")
    assert xl.count == 2 and xl.vectors["clip_g"].shape == (2, 1280)
    assert set(installed_embeddings(tmp_path)) == {"a1111", "learned_embeds", "xl"}


def test_read_embedding_refuses_pickles_and_other_files(tmp_path):
    from safetensors.torch import save_file

    torch.save({"emb_params": torch.zeros(1, 32)}, tmp_path / "renamed.safetensors")
    with pytest.raises(UserError, match="not a safetensors file"):
        read_embedding(tmp_path / "renamed.safetensors")
    torch.save({"emb_params": torch.zeros(1, 32)}, tmp_path / "old.pt")
    with pytest.raises(UserError, match="pickle"):
        read_embedding(tmp_path / "old.pt")
    save_file({"a.weight": torch.zeros(2, 2), "b.weight": torch.zeros(2, 2)}, tmp_path / "lora.safetensors")
    with pytest.raises(UserError, match="holds 2 tensors"):
        read_embedding(tmp_path / "lora.safetensors")
    assert "old" not in installed_embeddings(tmp_path)


# ---------------------------------------------------------------------------------------------- SDXL
@pytest.fixture(scope="module")
def sdxl(tiny_sd15):
    """A text-only SDXL pipeline: clip_l-like encoder (width 32) and a projected clip_g-like one (width 40) whose
    tokenizer pads with "!" as SDXL's tokenizer_2 does."""
    import copy

    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    config_g = copy.deepcopy(tiny_sd15.text_encoder.config)
    config_g.hidden_size, config_g.num_hidden_layers, config_g.projection_dim = 40, 3, 24
    tokenizer_2 = copy.deepcopy(tiny_sd15.tokenizer)
    tokenizer_2.pad_token = "!"
    return StableDiffusionXLPipeline(vae=None, text_encoder=CLIPTextModel(tiny_sd15.text_encoder.config),
                                     text_encoder_2=CLIPTextModelWithProjection(config_g),
                                     tokenizer=tiny_sd15.tokenizer, tokenizer_2=tokenizer_2, unet=None, scheduler=None)


def test_sdxl_matches_diffusers_encode_prompt(sdxl):
    for negative in ("ugly", ""):  # an empty negative prompt is all zeros in both (A1111's force_zero_embeddings)
        ours = encode_prompts(sdxl, "a cat on a hill", negative, clip_skip=2)  # clip skip is ignored for SDXL
        with torch.no_grad():
            theirs = sdxl.encode_prompt("a cat on a hill", device="cpu", do_classifier_free_guidance=True,
                                        negative_prompt=negative or None)
        for actual, expected in zip([ours.cond, ours.uncond, ours.cond_pooled, ours.uncond_pooled], theirs,
                                    strict=True):
            assert_near(actual, expected)


def sdxl_hidden(sdxl, text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Penultimate hidden states of both encoders and encoder 2's pooled projection, as diffusers' SDXL takes them."""
    with torch.no_grad():
        ids_l = torch.tensor([sdxl.tokenizer(text, padding="max_length", max_length=77).input_ids])
        ids_g = torch.tensor([sdxl.tokenizer_2(text, padding="max_length", max_length=77).input_ids])
        out_g = sdxl.text_encoder_2(ids_g, output_hidden_states=True)
        return (sdxl.text_encoder(ids_l, output_hidden_states=True).hidden_states[-2], out_g.hidden_states[-2],
                out_g.text_embeds)


def test_sdxl_weights_each_encoder_and_pools_the_first_chunk(sdxl):
    embeds = encode_prompts(sdxl, "a (house:1.5) on a hill BREAK a cat")
    assert embeds.cond.shape == (1, 154, 72) and embeds.chunks == 2
    house = torch.tensor(sdxl.tokenizer("a house on a hill", padding="max_length", max_length=77).input_ids) == 1212
    w = torch.where(house, 1.5, 1.0).reshape(1, 77, 1)
    z_l, z_g, pooled = sdxl_hidden(sdxl, "a house on a hill")
    expected = [z * w * (z.mean() / (z * w).mean()) for z in (z_l, z_g)]
    assert_near(embeds.cond[:, :77], torch.cat(expected, dim=-1))
    assert_near(embeds.cond[:, 77:], torch.cat(sdxl_hidden(sdxl, "a cat")[:2], dim=-1))
    assert_near(embeds.cond_pooled, pooled)


def test_sdxl_embedding_has_vectors_per_encoder(sdxl):
    def vectors(text_encoder, tokenizer):
        with torch.no_grad():
            return text_encoder.get_input_embeddings()(torch.tensor(tokenizer("house").input_ids[1:2])).clone()

    embedding = {"clip_l": vectors(sdxl.text_encoder, sdxl.tokenizer),
                 "clip_g": vectors(sdxl.text_encoder_2, sdxl.tokenizer_2)}
    ours = encode_prompts(sdxl, "a zqxemb on a hill", embeddings={"zqxemb": embedding})
    assert_near(ours.cond, torch.cat(sdxl_hidden(sdxl, "a house on a hill")[:2], dim=-1))
    with pytest.raises(UserError, match="another kind of model"):
        encode_prompts(sdxl, "a zqxemb", embeddings={"zqxemb": embedding["clip_l"]})  # an SD-1.5-style embedding
