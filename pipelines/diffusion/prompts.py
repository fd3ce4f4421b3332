"""Prompts as AUTOMATIC1111's webui reads them, turned into text-encoder embeddings.

    embeds = encode_prompts(pipe, "1girl, (red hair:1.2), [smile]", "lowres", clip_skip=2)
    pipe(prompt_embeds=embeds.cond, negative_prompt_embeds=embeds.uncond, ...)

The weight syntax is parsed by diffusion_prompt_embedder (MIT), a maintained copy of A1111's
`prompt_parser.parse_prompt_attention`. Its own embedding code cannot be used: it does not restore the chunk's
mean after weighting, tokenizes BREAK as a word, has no comma backtrack and no textual-inversion slots. So the
chunking and encoding below follow A1111's `modules/sd_hijack_clip.py` (FrozenCLIPEmbedderWithCustomWordsBase:
tokenize_line, process_tokens, emphasis "Original") and its `EmbeddingsWithFixes` rule by rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import UserError

if TYPE_CHECKING:
    import torch

CHUNK_LENGTH = 75  # prompt tokens per chunk; each chunk is encoded as BOS + 75 + EOS = 77 tokens
COMMA_PADDING_BACKTRACK = 20  # A1111 default of `comma_padding_backtrack`
SDXL_POOLED_KEY = "clip_g"  # the encoder whose pooled output SDXL takes, and the SDXL embedding key for it

# A1111's extra-network tag `<lora:name:te[:unet]>` (named args te=/unet=/dyn= allowed); `lyco` is its alias.
LORA_TAG = re.compile(r"<(?:lora|lyco):([^>]+)>")
# The largest LoRA weight either way, for `<lora:name:w>` tags and GenerateRequest.loras alike: past a few times
# its trained strength a LoRA only burns the image, and weights far past it overflow half-precision activations.
MAX_LORA_WEIGHT = 4.0


# ---------------------------------------------------------------------------------------------- text only
@dataclass(frozen=True)
class LoraTag:
    name: str
    weight: float


def extract_lora_tags(prompt: str) -> tuple[str, list[LoraTag]]:
    """Return the prompt without its `<lora:...>` tags (removed as A1111 does, spaces left as they are) and the
    tags in order. `<lora:name>` has weight 1; the weight is A1111's text-encoder multiplier (2nd field or te=)."""
    tags: list[LoraTag] = []

    def take(match: re.Match[str]) -> str:
        tags.append(_lora_tag(match.group(0), match.group(1)))
        return ""

    return LORA_TAG.sub(take, prompt or ""), tags


def _lora_tag(tag: str, body: str) -> LoraTag:
    fields = [part.strip() for part in body.split(":")]
    positional = [part for part in fields if "=" not in part]
    named = dict(part.split("=", 1) for part in fields if "=" in part)
    if not positional or not positional[0]:
        raise UserError(f"The prompt tag {tag} names no LoRA: write it as <lora:name:0.8>.")
    weight_text = positional[1] if len(positional) > 1 else named.get("te", "1")
    try:
        weight = float(weight_text)
    except ValueError:
        raise UserError(f"The weight in {tag} is not a number: write it as <lora:name:0.8>.") from None
    if not -MAX_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT:  # also refuses nan
        raise UserError(f"The weight in {tag} must be between -{MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}, as for "
                        "any LoRA (e.g. <lora:name:0.8>).")
    return LoraTag(positional[0], weight)


def parse_weights(text: str) -> list[tuple[str, float]]:
    """A1111's `parse_prompt_attention`: `(a)` x1.1, `[a]` /1.1, `(a:1.3)`, `\\(` literal, runs of equal weight
    merged. A `BREAK` keyword comes back as ("BREAK", -1.0), exactly as A1111 returns it."""
    from diffusion_prompt_embedder.core.parser import parse_prompt_attention

    return [(str(part), float(weight)) for part, weight in parse_prompt_attention(text or "")]


def _is_break(text: str, weight: float) -> bool:
    # A1111 tests `weight == -1`; a BREAK inside brackets has been multiplied (-1.1) and A1111 then encodes the
    # word "break" with a negative weight. That is a bug nobody relies on, so any negative BREAK breaks here.
    return text == "BREAK" and weight < 0


def find_embedding_names(prompt: str, known: Iterable[str]) -> list[str]:
    """The known embedding names that the prompt uses, in order of first use, spelled as in `known`.

    A1111 matches embeddings on CLIP token ids, which are lower-cased and split into letter runs, single digits
    and runs of other symbols; so a name matches case-insensitively where the text around it does not continue
    its first or last run (`easynegative,` matches EasyNegative; `easynegatives` does not)."""
    prompt, _ = extract_lora_tags(prompt)
    fragments = [text for text, weight in parse_weights(prompt) if not _is_break(text, weight)]
    first_use: dict[str, tuple[int, int]] = {}
    for name in dict.fromkeys(known):
        pattern = _name_pattern(name)
        uses = [(index, m.start()) for index, fragment in enumerate(fragments)
                if pattern is not None and (m := pattern.search(fragment))]
        if uses:
            first_use[name] = min(uses)
    return sorted(first_use, key=first_use.__getitem__)


def _char_class(char: str) -> str:
    if char.isalpha():
        return "letter"
    if char.isdigit():
        return "digit"  # CLIP splits digits one by one, so a digit never joins its neighbours
    return "space" if char.isspace() else "symbol"


def _name_pattern(name: str) -> re.Pattern[str] | None:
    name = name.strip()
    if not name:
        return None
    body = r"\s+".join(re.escape(part) for part in name.split())
    guards = {"letter": r"[^\W\d_]", "symbol": r"[^\w\s]|_"}
    before = guards.get(_char_class(name[0]))
    after = guards.get(_char_class(name[-1]))
    return re.compile((f"(?<!{before})" if before else "") + body + (f"(?!{after})" if after else ""),
                      re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- chunks
@dataclass
class _Chunk:
    """One 77-token encoder input: ids, a weight per id, and where embedding vectors go."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, str]] = field(default_factory=list)  # (offset after BOS, embedding name)


@dataclass(frozen=True)
class _Vocabulary:
    """What chunking needs from one tokenizer."""

    tokenizer: Any
    id_start: int
    id_end: int
    id_pad: int
    comma: int | None
    embeddings: dict[int, list[tuple[list[int], str]]]  # first id -> [(ids of the name, name)], longest first
    vectors: Mapping[str, Any]  # name -> its vectors, as given

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]

    def embedding_at(self, tokens: list[int], position: int) -> tuple[str, int, int] | None:
        """(name, its length in prompt tokens, its vector count) if an embedding name starts here."""
        for ids, name in self.embeddings.get(tokens[position], ()):
            if tokens[position:position + len(ids)] == ids:
                return name, len(ids), _vector_count(name, self.vectors[name])
        return None


def _vocabulary(tokenizer: Any, embeddings: Mapping[str, Any]) -> _Vocabulary:
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    lookup: dict[int, list[tuple[list[int], str]]] = {}
    names = list(embeddings)
    if names:
        for name, ids in zip(names, tokenizer(names, add_special_tokens=False, verbose=False)["input_ids"],
                             strict=True):
            if ids:
                lookup.setdefault(ids[0], []).append((ids, name))
        for candidates in lookup.values():
            candidates.sort(key=lambda entry: len(entry[0]), reverse=True)
    id_end = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    return _Vocabulary(tokenizer, tokenizer.bos_token_id, id_end, id_end if pad is None else pad,
                       None if comma in (None, tokenizer.unk_token_id) else comma, lookup, embeddings)


def _tokenize_line(line: str, vocab: _Vocabulary) -> tuple[list[_Chunk], int]:
    """A1111's tokenize_line: the prompt as 77-token chunks and its token count."""
    parsed = parse_weights(line)
    tokenized = vocab.tokenize([text for text, _ in parsed])
    chunks: list[_Chunk] = []
    chunk = _Chunk()
    token_count = 0
    last_comma = -1

    def next_chunk(is_last: bool = False) -> None:
        nonlocal chunk, token_count, last_comma
        token_count += len(chunk.tokens) if is_last else CHUNK_LENGTH
        to_add = CHUNK_LENGTH - len(chunk.tokens)
        chunk.tokens = [vocab.id_start, *chunk.tokens, *[vocab.id_end] * to_add, vocab.id_end]
        chunk.multipliers = [1.0, *chunk.multipliers, *[1.0] * to_add, 1.0]
        last_comma = -1
        chunks.append(chunk)
        chunk = _Chunk()

    for tokens, (text, weight) in zip(tokenized, parsed, strict=True):
        if _is_break(text, weight):
            next_chunk()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == vocab.comma:
                last_comma = len(chunk.tokens)
            # A full chunk whose last comma is near: the words after that comma move to the next chunk.
            elif (len(chunk.tokens) == CHUNK_LENGTH and last_comma != -1
                  and len(chunk.tokens) - last_comma <= COMMA_PADDING_BACKTRACK):
                cut = last_comma + 1
                # A1111 leaves the moved words' embedding slots behind (its vectors then land in padding);
                # they move with their words here.
                moved_tokens, moved_multipliers = chunk.tokens[cut:], chunk.multipliers[cut:]
                moved_fixes = [(offset - cut, name) for offset, name in chunk.fixes if offset >= cut]
                chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                chunk.fixes = [(offset, name) for offset, name in chunk.fixes if offset < cut]
                next_chunk()
                chunk.tokens, chunk.multipliers, chunk.fixes = moved_tokens, moved_multipliers, moved_fixes
            if len(chunk.tokens) == CHUNK_LENGTH:
                next_chunk()

            embedding = vocab.embedding_at(tokens, position)
            if embedding is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue
            name, name_length, vectors = embedding
            if len(chunk.tokens) + vectors > CHUNK_LENGTH:  # an embedding is never split across chunks
                next_chunk()
            chunk.fixes.append((len(chunk.tokens), name))
            chunk.tokens += [0] * vectors  # placeholder ids; the hook puts the vectors there
            chunk.multipliers += [weight] * vectors
            position += name_length

    if chunk.tokens or not chunks:
        next_chunk(is_last=True)
    return chunks, token_count


def _empty_chunk(vocab: _Vocabulary) -> _Chunk:
    return _Chunk([vocab.id_start] + [vocab.id_end] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2))


def _input_ids(chunk: _Chunk, vocab: _Vocabulary) -> list[int]:
    """SD1 pads with EOS; encoders whose tokenizer pads with another id (SD2, SDXL's clip_g) get that id after
    the first EOS, as A1111's process_tokens does."""
    ids = list(chunk.tokens)
    if vocab.id_pad != vocab.id_end:
        first_end = ids.index(vocab.id_end)
        ids[first_end + 1:] = [vocab.id_pad] * (len(ids) - first_end - 1)
    return ids


# ---------------------------------------------------------------------------------------------- embeddings
def _vector_count(name: str, value: Any) -> int:
    value = getattr(value, "vectors", value)
    if isinstance(value, Mapping):
        if not value:
            raise UserError(f"The embedding {name} holds no vectors.")
        value = next(iter(value.values()))
    if value.ndim == 1:
        return 1
    if value.ndim != 2 or not 0 < value.shape[0] <= CHUNK_LENGTH:
        raise UserError(f"The embedding {name} is not a list of 1 to {CHUNK_LENGTH} vectors (shape "
                        f"{tuple(value.shape)}).")
    return int(value.shape[0])


def _vectors_for(name: str, value: Any, key: str, width: int) -> torch.Tensor:
    """The vectors of one embedding for one text encoder (SDXL embeddings hold one set per encoder)."""
    value = getattr(value, "vectors", value)
    if isinstance(value, Mapping):
        if key not in value:
            raise UserError(f"The embedding {name} has no vectors for this model's {key} text encoder "
                            f"(it has {', '.join(value)}): it was made for another kind of model.")
        value = value[key]
    vectors = value.reshape(1, -1) if value.ndim == 1 else value
    if vectors.shape[-1] != width:
        raise UserError(f"The embedding {name} has {vectors.shape[-1]}-wide vectors but this model's text encoder "
                        f"uses {width}: it was made for another kind of model (SD 1.5, SD 2 or SDXL).")
    return vectors


@contextmanager
def _embedding_slots(text_encoder: Any, input_ids: torch.Tensor,
                     fixes: list[tuple[int, int, torch.Tensor]]) -> Iterator[None]:
    """Put embedding vectors into the token-embedding output for this call only (A1111's EmbeddingsWithFixes).

    The hook is registered on the shared encoder just for this block and only touches a forward whose ids are
    this call's (same storage or same values), so a concurrent call on the same encoder is left alone."""
    if not fixes:
        yield
        return
    import torch

    def place_vectors(_module: Any, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        ids = inputs[0] if inputs else None
        if ids is None or ids.shape != input_ids.shape or not (
                ids.data_ptr() == input_ids.data_ptr() or torch.equal(ids.to(input_ids.device), input_ids)):
            return None
        output = output.clone()
        for row, offset, vectors in fixes:
            count = min(output.shape[1] - offset - 1, vectors.shape[0])
            output[row, offset + 1:offset + 1 + count] = vectors[:count].to(output.device, output.dtype)
        return output

    handle = text_encoder.get_input_embeddings().register_forward_hook(place_vectors)
    try:
        yield
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------- encoding
@dataclass
class PromptEmbeds:
    """What the pipeline takes as prompt_embeds / negative_prompt_embeds (and the pooled ones for SDXL)."""

    cond: torch.Tensor  # [1, 77 * chunks, D]
    uncond: torch.Tensor  # same shape: the shorter side is padded with empty-prompt chunks
    chunks: int
    tokens: int  # the prompt's token count as A1111 shows it
    cond_pooled: torch.Tensor | None = None  # [1, P], SDXL only
    uncond_pooled: torch.Tensor | None = None


@dataclass(frozen=True)
class _Encoder:
    tokenizer: Any
    text_encoder: Any
    key: str  # which vectors of an SDXL embedding belong to it
    sdxl: bool


def encode_prompts(pipe: Any, prompt: str, negative_prompt: str = "", *, clip_skip: int = 1,
                   embeddings: Mapping[str, Any] | None = None) -> PromptEmbeds:
    """Encode a prompt and a negative prompt the way A1111 does (see the module docstring).

    clip_skip: 1 = the last layer, 2 = the penultimate hidden state through the final layer norm (A1111). For
    SDXL it is ignored, as in A1111: both encoders give their penultimate hidden state, concatenated, and an
    empty negative prompt is all zeros (A1111's force_zero_embeddings).
    embeddings: name -> [n, D] vectors (or {"clip_l": ..., "clip_g": ...} for SDXL); the name written in the
    prompt is replaced by its vectors. An embedding the prompt does not use is not checked.
    """
    import torch

    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or clip_skip < 1:
        raise UserError(f"Clip skip must be a whole number from 1 up (got {clip_skip!r}).")
    encoders = _encoders(pipe)
    device = _input_device(pipe, encoders[0].text_encoder)
    embeddings = dict(embeddings or {})
    results = [_encode_with(encoder, prompt or "", negative_prompt or "", clip_skip, embeddings, device)
               for encoder in encoders]
    chunks = max(result.chunks for result in results)
    cond = torch.cat([_pad_chunks(result.cond, result.empty, chunks) for result in results], dim=-1)
    uncond = torch.cat([_pad_chunks(result.uncond, result.empty, chunks) for result in results], dim=-1)
    embeds = PromptEmbeds(cond=cond, uncond=uncond, chunks=chunks, tokens=results[0].tokens)
    if encoders[-1].sdxl:
        embeds.cond_pooled, embeds.uncond_pooled = results[-1].cond_pooled, results[-1].uncond_pooled
        if not negative_prompt:  # A1111 tests for exactly ""
            embeds.uncond = torch.zeros_like(embeds.uncond)
            embeds.uncond_pooled = torch.zeros_like(embeds.uncond_pooled)
    return embeds


def _input_device(pipe: Any, text_encoder: Any) -> Any:
    """Where the token ids go: the encoder's device, or under CPU offload (accelerate's hook on the module) the
    device it is moved to for the forward pass. `pipe._execution_device` walks every module (ms per call)."""
    if hasattr(text_encoder, "_hf_hook"):
        return getattr(pipe, "_execution_device", text_encoder.device)
    return text_encoder.device


def encode_prompt_batch(pipe: Any, prompts: list[str], negative_prompt: str = "", *, clip_skip: int = 1,
                        embeddings: Mapping[str, Any] | None = None) -> PromptEmbeds:
    """One prompt per image (a storyboard's panels) and a shared negative prompt: [B, 77 * chunks, D] each,
    every row padded with empty-prompt chunks to the longest, as `encode_prompts` pads cond against uncond."""
    import torch

    if not prompts:
        raise UserError("Give at least one prompt.")
    each = [encode_prompts(pipe, prompt, negative_prompt, clip_skip=clip_skip, embeddings=embeddings)
            for prompt in prompts]
    chunks = max(item.chunks for item in each)
    if any(item.chunks < chunks for item in each):
        empty = encode_prompts(pipe, "", "", clip_skip=clip_skip).cond  # the empty-prompt chunk of each encoder
        each = [_padded_to(item, empty, chunks) for item in each]
    batch = PromptEmbeds(cond=torch.cat([item.cond for item in each]), uncond=torch.cat([item.uncond for item in each]),
                         chunks=chunks, tokens=max(item.tokens for item in each))
    if each[0].cond_pooled is not None:  # SDXL
        batch.cond_pooled = torch.cat([item.cond_pooled for item in each])
        batch.uncond_pooled = torch.cat([item.uncond_pooled for item in each])
    return batch


def _padded_to(embeds: PromptEmbeds, empty: torch.Tensor, chunks: int) -> PromptEmbeds:
    import torch

    missing = chunks - embeds.cond.shape[1] // empty.shape[1]
    if missing <= 0:
        return embeds
    pad = empty.expand(1, -1, -1).repeat(1, missing, 1)
    uncond_pad = torch.zeros_like(pad) if not embeds.uncond.any() else pad  # SDXL's all-zero empty negative
    return PromptEmbeds(cond=torch.cat([embeds.cond, pad], dim=1), uncond=torch.cat([embeds.uncond, uncond_pad], dim=1),
                        chunks=chunks, tokens=embeds.tokens, cond_pooled=embeds.cond_pooled,
                        uncond_pooled=embeds.uncond_pooled)


def _encoders(pipe: Any) -> list[_Encoder]:
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    pairs = [("tokenizer", "text_encoder", "clip_l"), ("tokenizer_2", "text_encoder_2", SDXL_POOLED_KEY)]
    encoders = [_Encoder(getattr(pipe, tok, None), getattr(pipe, enc, None), key, sdxl) for tok, enc, key in pairs]
    encoders = [e for e in encoders if e.tokenizer is not None and e.text_encoder is not None]
    if not encoders:
        raise UserError("This pipeline has no text encoder, so it cannot read a prompt.")
    return encoders


@dataclass
class _Encoded:
    cond: torch.Tensor
    uncond: torch.Tensor
    empty: torch.Tensor
    chunks: int
    tokens: int
    cond_pooled: torch.Tensor | None
    uncond_pooled: torch.Tensor | None


def _encode_with(encoder: _Encoder, prompt: str, negative: str, clip_skip: int, embeddings: dict[str, Any],
                 device: Any) -> _Encoded:
    """Both prompts and one empty chunk (for padding) through one text encoder, in one batch."""
    import torch

    text_encoder = encoder.text_encoder
    layers = text_encoder.config.num_hidden_layers
    if not encoder.sdxl and clip_skip > layers:
        raise UserError(f"Clip skip must be from 1 to {layers} for this model (got {clip_skip}).")
    vocab = _vocabulary(encoder.tokenizer, embeddings)
    cond_chunks, tokens = _tokenize_line(prompt, vocab)
    uncond_chunks, _ = _tokenize_line(negative, vocab)
    rows = [*cond_chunks, *uncond_chunks, _empty_chunk(vocab)]

    width = text_encoder.get_input_embeddings().embedding_dim
    vectors = {name: _vectors_for(name, embeddings[name], encoder.key, width)
               for name in {name for chunk in rows for _, name in chunk.fixes}}
    fixes = [(row, offset, vectors[name]) for row, chunk in enumerate(rows) for offset, name in chunk.fixes]

    input_ids = torch.tensor([_input_ids(chunk, vocab) for chunk in rows], device=device or text_encoder.device)
    with torch.no_grad(), _embedding_slots(text_encoder, input_ids, fixes):
        output = text_encoder(input_ids, output_hidden_states=encoder.sdxl or clip_skip > 1)
        z = _hidden_state(text_encoder, output, clip_skip, encoder.sdxl)
        multipliers = torch.tensor([chunk.multipliers for chunk in rows], device=z.device)
        z = _emphasis_original(z, multipliers)
    pooled = getattr(output, "text_embeds", None) if encoder.sdxl else None
    n_cond = len(cond_chunks)
    return _Encoded(cond=_join_chunks(z[:n_cond]), uncond=_join_chunks(z[n_cond:-1]), empty=z[-1:],
                    chunks=max(n_cond, len(uncond_chunks)), tokens=tokens,
                    cond_pooled=None if pooled is None else pooled[:1],  # SDXL pools the first chunk (A1111)
                    uncond_pooled=None if pooled is None else pooled[n_cond:n_cond + 1])


def _hidden_state(text_encoder: Any, output: Any, clip_skip: int, sdxl: bool) -> torch.Tensor:
    if sdxl:  # A1111 SDXL: clip_l "hidden" layer 11 and clip_g "penultimate", no final norm, clip skip ignored
        return output.hidden_states[-2]
    if clip_skip == 1:
        return output.last_hidden_state
    # transformers 5's CLIPTextModel is flat; CLIPTextModelWithProjection (and older versions) nest .text_model
    final_layer_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    return final_layer_norm(output.hidden_states[-clip_skip])


def _emphasis_original(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """A1111 emphasis "Original", per chunk: multiply each token's vector by its weight, then scale the chunk so
    its mean is what it was (computed in float32, returned in the encoder's dtype)."""
    import torch

    z32 = z.float()
    original_mean = z32.mean(dim=(1, 2), keepdim=True)
    weighted = z32 * multipliers.float().unsqueeze(-1)
    new_mean = weighted.mean(dim=(1, 2), keepdim=True)
    # A chunk whose mean is exactly 0 (an encoder whose final norm has no bias) would give 0/0: leave it unscaled.
    factor = torch.where(new_mean == 0, torch.ones_like(new_mean), original_mean / new_mean)
    return (weighted * factor).to(z.dtype)


def _join_chunks(z: torch.Tensor) -> torch.Tensor:
    return z.reshape(1, -1, z.shape[-1])


def _pad_chunks(z: torch.Tensor, empty: torch.Tensor, chunks: int) -> torch.Tensor:
    """Pad [1, 77 * k, D] with empty-prompt chunks to `chunks` chunks. This is A1111's `pad_cond_uncond` option;
    A1111's default instead runs cond and uncond through the UNet separately when their lengths differ. diffusers
    runs them as one batch, which needs equal lengths, and the empty chunks barely move the result."""
    import torch

    missing = chunks - z.shape[1] // empty.shape[1]
    return torch.cat([z, *[empty] * missing], dim=1) if missing > 0 else z
