"""The seed's prompt learning: BLIP captions, CLIP scores, P*, the P+/P− split, the contrastive loss, augmentation.

BLIP and CLIP come through the core loader (`transformers` family), as the metrics load CLIP; `tiny:blip` and
`tiny:clip` are random-weight test models, so captions and scores made with them are labelled as such.

Decisions where the seed is vague or wrong (issue 11):
- K captions sampled from BLIP (default 8); P* = the one CLIP finds most similar to the image; the others split at
  the median similarity into P+ (≥ median) and P−; the most frequent non-stop-word over all captions is removed
  from P− (seed eq. 9).
- The seed's eq. 10 as printed would pull the image toward P− (minimising λ1·cos(P+) − λ2·cos(P−)); the sign is
  fixed so it does what the text says: L = −cos(v_P+, v_x̂) + cos(v_P−, v_x̂), v_P± the mean CLIP text embedding of
  each group, weight 0.1, every 10 steps, on the predicted clean image at the current scale.
- Prompt augmentation (seed §III-D uses WordNet, not installed here): a small shipped synonym table plus a few
  paraphrase templates, shown to the user.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.core import loader

DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_CAPTIONS = 8
CONTRASTIVE_WEIGHT = 0.1
CONTRASTIVE_EVERY = 10

_STOP_WORDS_TEXT = """
a an the of in on at with and or to from by for is are was were be been being it its this that these those there
here as into onto over under near next up down out off very some any his her their them they he she we you i has
have had do does did not no which who whom what while than then so such
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())

# A small offline synonym table (WordNet is not installed); words a user is likely to write in an edit prompt.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "mountain": ("peak", "ridge", "summit"), "mountains": ("peaks", "ridges", "hills"),
    "fire": ("flames", "blaze", "burning"), "snow": ("snowfall", "frost", "white snow"),
    "water": ("lake", "sea", "river"), "sea": ("ocean", "water", "waves"), "ocean": ("sea", "waves", "water"),
    "sky": ("heavens", "skyline", "clouds"), "sunset": ("dusk", "evening glow", "twilight"),
    "night": ("darkness", "nighttime", "evening"), "tree": ("trees", "woods", "forest"),
    "trees": ("woods", "forest", "grove"), "forest": ("woods", "woodland", "trees"), "grass": ("lawn", "meadow"),
    "flower": ("blossom", "bloom"), "flowers": ("blossoms", "blooms"), "red": ("crimson", "scarlet"),
    "blue": ("azure", "cobalt"), "green": ("emerald", "verdant"), "yellow": ("golden", "amber"),
    "white": ("pale", "snowy"), "black": ("dark", "ebony"), "autumn": ("fall", "autumnal"),
    "winter": ("wintry", "snowy"), "summer": ("summery", "sunny"), "rain": ("rainfall", "showers", "drizzle"),
    "city": ("town", "cityscape", "buildings"), "building": ("house", "tower"), "house": ("home", "cottage"),
    "stone": ("rock", "pebble"), "rocks": ("stones", "boulders"), "sand": ("dunes", "beach"),
    "coffee": ("espresso", "coffee beans"), "cat": ("kitten", "feline"), "dog": ("puppy", "hound"),
    "bird": ("birds", "songbird"), "big": ("large", "huge"), "small": ("little", "tiny"),
    "bright": ("vivid", "luminous"), "dark": ("dim", "shadowy"), "painting": ("artwork", "picture"),
    "photo": ("photograph", "picture"), "anime": ("manga style", "cartoon"),
}
PARAPHRASES = ("{prompt}", "a picture of {prompt}", "{prompt}, high detail", "a scene with {prompt}")


# ---------------------------------------------------------------------------------------------- augmentation
def augment_prompt(prompt: str, count: int = 4) -> list[str]:
    """The prompt and up to `count − 1` variants (synonyms of its words, then paraphrase templates), unique."""
    prompt = " ".join(str(prompt).split())
    if not prompt:
        return []
    variants = [prompt]
    words = prompt.split(" ")
    choices = [(index, SYNONYMS.get(word.lower().strip(",."), ())) for index, word in enumerate(words)]
    for rank in range(max((len(options) for _, options in choices), default=0)):  # each word's 1st synonym first
        for index, options in choices:
            if rank < len(options):
                variants.append(" ".join([*words[:index], options[rank], *words[index + 1:]]))
    variants += [template.format(prompt=prompt) for template in PARAPHRASES[1:]]
    return list(dict.fromkeys(variants))[:max(1, count)]


# ---------------------------------------------------------------------------------------------- CLIP
class ClipModel:
    """A CLIP model through the core loader, with differentiable image features for the losses and guidance."""

    def __init__(self, source: str = DEFAULT_CLIP) -> None:
        self.source = source
        self.model = loader.load_model("transformers", source, class_name="CLIPModel", dtype=torch.float32)
        # The cached model is shared by every request: gradients must reach the image, never its parameters.
        self.model.requires_grad_(False)
        self.processor = loader.load_model("transformers", source, class_name="CLIPProcessor")
        self.is_test_model = loader.is_test_model(source) or bool(getattr(loader.model_info(self.model),
                                                                          "test_model", False))
        image_processor = self.processor.image_processor
        crop = image_processor.crop_size
        self.size = (int(crop["height"]), int(crop["width"]))
        self.mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit CLIP embeddings of N×3×h×w images in [-1, 1], differentiable (bicubic resize to CLIP's input)."""
        pixels = F.interpolate((images.float() + 1) / 2, size=self.size, mode="bicubic", align_corners=False,
                               antialias=True)
        pixels = ((pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)).to(self.device)
        output = self.model.get_image_features(pixel_values=pixels)
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        return F.normalize(features.float(), dim=-1)

    def _tokens(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        tokenizer = self.processor.tokenizer
        length = min(77, int(getattr(self.model.config.text_config, "max_position_embeddings", 77)))
        tokens = tokenizer(prompts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        return {key: value.to(self.device) for key, value in tokens.items() if key in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        output = self.model.get_text_features(**self._tokens(list(prompts)))
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        return F.normalize(features.float(), dim=-1).cpu()

    @torch.no_grad()
    def text_tokens(self, prompt: str) -> torch.Tensor:
        """1×L×D last hidden states of the text encoder: what the U-Net's cross-attention reads (as in SD)."""
        output = self.model.text_model(**self._tokens([prompt]))
        return output.last_hidden_state.float().cpu()

    @property
    def token_width(self) -> int:
        return int(self.model.config.text_config.hidden_size)


# ---------------------------------------------------------------------------------------------- BLIP captions
def blip_captions(image: Any, source: str = DEFAULT_BLIP, count: int = DEFAULT_CAPTIONS, seed: int = 0) -> list[str]:
    """`count` captions sampled from BLIP (nucleus sampling, seeded), stripped of empty ones."""
    model = loader.load_model("transformers", source, class_name="BlipForConditionalGeneration",
                              dtype=torch.float32)
    processor = loader.load_model("transformers", source, class_name="BlipProcessor")
    inputs = processor(images=image, return_tensors="pt")
    pixels = inputs["pixel_values"].to(next(model.parameters()).device)
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(int(seed))
        ids = model.generate(pixel_values=pixels, do_sample=True, top_p=0.9, num_return_sequences=int(count),
                             max_new_tokens=30)
    captions = [" ".join(text.split()) for text in processor.batch_decode(ids, skip_special_tokens=True)]
    return [caption or "an image" for caption in captions]


def keyword(captions: list[str]) -> str:
    """The most frequent non-stop-word across the captions (the seed's "key word"); "" when there is none."""
    words = [word for caption in captions for word in re.findall(r"[a-z]+", caption.lower())
             if word not in STOP_WORDS and len(word) > 1]
    return Counter(words).most_common(1)[0][0] if words else ""


def remove_word(caption: str, word: str) -> str:
    if not word:
        return caption
    kept = re.sub(rf"\b{re.escape(word)}\b", " ", caption, flags=re.IGNORECASE)
    return " ".join(kept.split()) or caption


@dataclass
class PromptSet:
    """The captions table: every caption with its CLIP score, P*, the P+/P− split and the removed keyword."""

    captions: list[str]
    scores: list[float]
    best: str
    positive: list[str]
    negative: list[str]  # with the keyword removed
    keyword: str
    median: float
    blip: str = ""
    clip: str = ""
    test_models: bool = False
    notes: list[str] = field(default_factory=list)

    def table(self) -> list[list[Any]]:
        """Rows for the tab: caption, CLIP score, role."""
        rows = []
        for caption, score in sorted(zip(self.captions, self.scores, strict=True), key=lambda pair: -pair[1]):
            role = "P* (conditions the U-Net)" if caption == self.best else ("P+" if score >= self.median else
                                                                            "P− (keyword removed)")
            rows.append([caption, round(score, 4), role])
        return rows


def split_prompts(captions: list[str], scores: list[float]) -> PromptSet:
    """P* = the best caption; the others at or above the median score are P+, below it P− (keyword removed)."""
    if not captions:
        raise ValueError("No captions to split.")
    order = int(np.argmax(scores))
    best = captions[order]
    rest = [(caption, score) for index, (caption, score) in enumerate(zip(captions, scores, strict=True))
            if index != order]
    median = float(np.median(scores))
    word = keyword(captions)
    positive = [caption for caption, score in rest if score >= median] or [best]
    negative = [remove_word(caption, word) for caption, score in rest if score < median]
    return PromptSet(list(captions), [float(score) for score in scores], best, positive, negative, word, median)


def caption_prompts(image: Any, blip: str = DEFAULT_BLIP, clip: ClipModel | str = DEFAULT_CLIP,
                    count: int = DEFAULT_CAPTIONS, seed: int = 0) -> PromptSet:
    """BLIP's K captions of `image` (PIL), scored by CLIP against it, split into P*, P+ and P−."""
    from .train import image_tensor

    clip_model = clip if isinstance(clip, ClipModel) else ClipModel(clip)
    captions = blip_captions(image, blip, count, seed)
    with torch.no_grad():
        image_embedding = clip_model.image_features(image_tensor(image)).cpu()
    scores = (clip_model.text_features(captions) @ image_embedding.T).squeeze(1).tolist()
    prompts = split_prompts(captions, scores)
    prompts.blip, prompts.clip = blip, clip_model.source
    prompts.test_models = loader.is_test_model(blip) or clip_model.is_test_model
    if prompts.test_models:
        prompts.notes.append("BLIP/CLIP are test models with random weights: these captions and scores are noise.")
    return prompts


# ---------------------------------------------------------------------------------------------- loss
def contrastive_loss(image_embedding: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None
                     ) -> torch.Tensor:
    """L = −cos(v_P+, v_x̂) + cos(v_P−, v_x̂) (the seed's eq. 10 with its sign fixed), averaged over the batch.

    image_embedding: N×D unit vectors; positive/negative: K×D text embeddings, averaged per group as the seed does.
    """
    v_plus = F.normalize(positive.to(image_embedding).mean(0, keepdim=True), dim=-1)
    loss = -(image_embedding @ v_plus.T).mean()
    if negative is not None and len(negative):
        v_minus = F.normalize(negative.to(image_embedding).mean(0, keepdim=True), dim=-1)
        loss = loss + (image_embedding @ v_minus.T).mean()
    return loss
