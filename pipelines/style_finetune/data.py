"""The training set: 3–200 images from files or zips, checked, cropped to squares, with editable captions.

    dataset = build_dataset(["a.png", "more.zip"], trigger="arkstyle", resolution=512, caption_model="tiny:blip")
    dataset.captions[0]          # "arkstyle, a girl with a sword" (trigger word + optional BLIP caption)
    save_dataset(dataset, folder); load_dataset(folder)

Checks (each skipped file gets a plain note): not an image or unreadable (core `load_image`), smaller than
half the training resolution on its short side, an exact or near duplicate of an earlier image (a 64-bit
difference hash, Hamming distance ≤ DUPLICATE_BITS). Zips are unpacked by `core.archives` (no `..` or absolute
names, capped size, zip-bomb ratio). The crop is a centred square, or, with `face_aware`, a square centred on
the largest face MediaPipe's face detector finds (it ships inside the mediapipe wheel, so it works offline; it
was trained on photographs and misses many drawn faces, in which case the centre crop is used and counted).
OpenCV's Haar cascades are not in this opencv build and the anime cascade (lbpcascade_animeface) is not
packaged anywhere we can install from, so MediaPipe is the detector.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from pipelines.core.errors import UserError

MIN_IMAGES, MAX_IMAGES = 3, 200
MAX_INPUT_SIDE = 4096  # larger images are downscaled on reading (they are cropped to the resolution anyway)
DUPLICATE_BITS = 4  # dHash distance at or below which two images count as the same picture
TRIGGER_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{1,39}$")
CAPTION_FILE = "captions.json"


@dataclass(frozen=True)
class Dataset:
    images: tuple[Image.Image, ...]  # RGB squares at `resolution`
    names: tuple[str, ...]  # the source file names, for the caption table
    captions: tuple[str, ...]
    trigger: str
    resolution: int
    notes: tuple[str, ...] = field(default_factory=tuple)  # skipped files, crops, what BLIP was

    def __len__(self) -> int:
        return len(self.images)

    def with_captions(self, captions: Sequence[str]) -> Dataset:
        """The same images with edited captions (the tab's table); the trigger word is kept in each."""
        if len(captions) != len(self.images):
            raise UserError(f"There are {len(captions)} captions for {len(self.images)} images; give one each.")
        return replace(self, captions=tuple(ensure_trigger(str(text), self.trigger) for text in captions))

    def digest(self) -> str:
        """Identifies the images and captions: a resumed training must see exactly the same data."""
        digest = hashlib.sha256(f"{self.trigger}|{self.resolution}".encode())
        for image, caption in zip(self.images, self.captions, strict=True):
            digest.update(image.tobytes())
            digest.update(caption.encode())
        return digest.hexdigest()[:16]


def check_trigger(trigger: str) -> str:
    """The trigger word, stripped; a UserError when it cannot name an embedding file and a prompt word."""
    trigger = str(trigger or "").strip()
    if not TRIGGER_PATTERN.match(trigger):
        raise UserError(f"The trigger word {trigger!r} must be 2–40 letters, digits or _ starting with a letter "
                        "(it becomes a word in prompts and the embedding's file name), e.g. 'arkstyle'.")
    return trigger


def ensure_trigger(caption: str, trigger: str) -> str:
    """The caption with the trigger word at its start (once)."""
    caption = " ".join(caption.split())
    if re.search(rf"(?<![A-Za-z0-9_]){re.escape(trigger)}(?![A-Za-z0-9_])", caption):
        return caption
    return f"{trigger}, {caption}" if caption else trigger


# ---------------------------------------------------------------------------------------------- reading
def read_images(sources: Sequence[Any], min_side: int = 16) -> tuple[list[tuple[str, Image.Image]], list[str]]:
    """(name, RGB image) for every usable image in `sources` (paths, zips, PIL images), and notes for the rest."""
    from pipelines.core.archives import IMAGE_SUFFIXES, extract_images
    from pipelines.core.images import ImageInputError, load_image

    found: list[tuple[str, Image.Image]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="asl-dataset-") as unpacked:
        expanded: list[tuple[str, Any]] = []
        for index, source in enumerate(sources):
            if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".zip":
                paths, skipped = extract_images(source, Path(unpacked) / f"{index:03d}")
                notes += [f"{Path(source).name}: {item}" for item in skipped]
                expanded += [(path.name, path) for path in sorted(paths)]
            elif isinstance(source, (str, os.PathLike)):
                if Path(source).suffix.lower() not in IMAGE_SUFFIXES:
                    notes.append(f"{Path(source).name}: not an image file (use PNG, JPEG, WebP, BMP or TIFF), skipped")
                    continue
                expanded.append((Path(source).name, source))
            else:
                expanded.append((f"image {index + 1}", source))
        for name, source in expanded:
            try:
                image = load_image(source, max_side=MAX_INPUT_SIDE, name=name)
            except ImageInputError as err:
                notes.append(f"{err}; skipped")
                continue
            if min(image.size) < min_side:
                notes.append(f"{name} is {image.width}×{image.height}; images need at least {min_side} px on the "
                             "short side (half the training resolution), skipped")
                continue
            found.append((name, image))
    return found, notes


def difference_hash(image: Image.Image) -> int:
    """64-bit dHash (Krawetz): brightness gradients of a 9×8 greyscale thumbnail. Resized, recompressed or
    slightly retouched copies of a picture keep nearly the same bits; different pictures differ in ~32."""
    small = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = list(small.getdata())
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | int(pixels[row * 9 + col] > pixels[row * 9 + col + 1])
    return bits


def drop_duplicates(images: list[tuple[str, Image.Image]]) -> tuple[list[tuple[str, Image.Image]], list[str]]:
    kept: list[tuple[str, Image.Image, int]] = []
    notes = []
    for name, image in images:
        code = difference_hash(image)
        twin = next((other for other, _, other_code in kept if bin(code ^ other_code).count("1") <= DUPLICATE_BITS),
                    None)
        if twin is not None:
            notes.append(f"{name} is a duplicate of {twin}, skipped (duplicates weigh one picture twice)")
            continue
        kept.append((name, image, code))
    return [(name, image) for name, image, _ in kept], notes


# ---------------------------------------------------------------------------------------------- cropping
def face_center(image: Image.Image) -> tuple[float, float] | None:
    """The centre (x, y in pixels) of the largest face MediaPipe finds, or None."""
    import numpy as np
    from mediapipe.python.solutions import face_detection

    with face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as detector:
        result = detector.process(np.asarray(image.convert("RGB")))
    if not result.detections:
        return None
    box = max((d.location_data.relative_bounding_box for d in result.detections), key=lambda b: b.width * b.height)
    return (box.xmin + box.width / 2) * image.width, (box.ymin + box.height / 2) * image.height


def square_crop(image: Image.Image, resolution: int, center: tuple[float, float] | None = None) -> Image.Image:
    """The largest square around `center` (default: the middle), kept inside the image, resized to `resolution`."""
    side = min(image.size)
    cx, cy = center or (image.width / 2, image.height / 2)
    left = int(round(min(max(cx - side / 2, 0), image.width - side)))
    top = int(round(min(max(cy - side / 2, 0), image.height - side)))
    square = image.crop((left, top, left + side, top + side))
    return square.resize((resolution, resolution), Image.Resampling.LANCZOS) if side != resolution else square


def crop_all(images: list[tuple[str, Image.Image]], resolution: int,
             face_aware: bool) -> tuple[list[Image.Image], list[str]]:
    notes, cropped, faces = [], [], 0
    for _, image in images:
        center = face_center(image) if face_aware else None
        faces += center is not None
        cropped.append(square_crop(image, resolution, center))
    small = sum(min(image.size) < resolution for _, image in images)
    if small:
        notes.append(f"{small} image(s) are smaller than {resolution} px and were upscaled (they may look soft).")
    if face_aware:
        notes.append(f"Face-aware crop: a face was found in {faces} of {len(images)} images (MediaPipe's detector, "
                     "trained on photographs); the others were centre-cropped.")
    return cropped, notes


# ---------------------------------------------------------------------------------------------- captions
def blip_captions(images: Sequence[Image.Image], model: str, *, max_new_tokens: int = 30) -> list[str]:
    """One caption per image from a transformers BLIP captioning model, loaded through the core loader."""
    import torch

    from pipelines.core.loader import load_model

    blip = load_model("transformers", model, class_name="BlipForConditionalGeneration")
    processor = load_model("transformers", model, class_name="BlipProcessor")
    captions = []
    for image in images:
        inputs = processor(images=image, return_tensors="pt").to(blip.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(blip.dtype)
        with torch.inference_mode():
            ids = blip.generate(**inputs, max_new_tokens=max_new_tokens)
        captions.append(processor.decode(ids[0], skip_special_tokens=True).strip())
    return captions


def build_dataset(sources: Sequence[Any], trigger: str, *, resolution: int = 512, face_aware: bool = False,
                  caption_model: str | None = None,
                  progress: Callable[[int, int, str], None] | None = None) -> Dataset:
    """Read, check, deduplicate, crop and caption; a UserError when fewer than 3 (or more than 200) images remain."""
    from pipelines.core.loader import TEST_MODEL_LABEL, is_test_model

    trigger = check_trigger(trigger)
    if progress:
        progress(0, 3, "Reading images")
    found, notes = read_images(sources, min_side=max(16, resolution // 2))
    found, duplicate_notes = drop_duplicates(found)
    notes += duplicate_notes
    if len(found) < MIN_IMAGES:
        raise UserError(f"Only {len(found)} usable image(s); style training needs at least {MIN_IMAGES}. "
                        + " ".join(notes))
    if len(found) > MAX_IMAGES:
        raise UserError(f"{len(found)} images: at most {MAX_IMAGES} can be used; choose the most typical ones.")
    if progress:
        progress(1, 3, "Cropping")
    images, crop_notes = crop_all(found, resolution, face_aware)
    notes += crop_notes
    captions = [trigger] * len(images)
    if caption_model:
        if progress:
            progress(2, 3, "Captioning with BLIP")
        captions = [ensure_trigger(text, trigger) for text in blip_captions(images, caption_model)]
        if is_test_model(caption_model):
            notes.append(f"Captions come from a BLIP {TEST_MODEL_LABEL}: they are random words; edit them.")
    return Dataset(tuple(images), tuple(name for name, _ in found), tuple(captions), trigger, resolution,
                   tuple(notes))


# ---------------------------------------------------------------------------------------------- storage
def save_dataset(dataset: Dataset, folder: str | os.PathLike) -> Path:
    """Images as 000.png… and captions.json, written into a temporary folder and renamed into place."""
    from pipelines.core.jobs import atomic_folder

    folder = Path(folder)
    with atomic_folder(folder, replace=True) as tmp:
        for index, image in enumerate(dataset.images):
            image.save(tmp / f"{index:03d}.png")
        info = {"trigger": dataset.trigger, "resolution": dataset.resolution, "names": list(dataset.names),
                "captions": list(dataset.captions), "notes": list(dataset.notes)}
        (tmp / CAPTION_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
    return folder


def load_dataset(folder: str | os.PathLike) -> Dataset:
    folder = Path(folder)
    path = folder / CAPTION_FILE
    if not path.is_file():
        raise UserError(f"No prepared dataset in {folder}; prepare one in step 1 first.")
    info = json.loads(path.read_text(encoding="utf-8"))
    images = []
    for index in range(len(info["captions"])):
        with Image.open(folder / f"{index:03d}.png") as image:
            images.append(image.convert("RGB"))
    return Dataset(tuple(images), tuple(info["names"]), tuple(info["captions"]), info["trigger"],
                   int(info["resolution"]), tuple(info.get("notes", ())))
