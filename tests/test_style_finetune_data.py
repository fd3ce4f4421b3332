"""The training set: files and zips are checked (types, sizes, duplicates, unsafe zip entries), cropped to squares
as specified, captioned with the trigger word, and saved/loaded without change."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from pipelines.core.errors import UserError
from pipelines.style_finetune.data import (
    build_dataset,
    check_trigger,
    difference_hash,
    ensure_trigger,
    load_dataset,
    save_dataset,
    square_crop,
)


def noise_image(seed: int, size=(96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8"))


def write_images(folder, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"img{index}.png"
        noise_image(index).save(path)
        paths.append(str(path))
    return paths


def test_square_crop_keeps_the_centre_or_the_given_point():
    # a 2:1 image: left quarter red, middle half green, right quarter blue -> the centre square is all green
    array = np.zeros((50, 100, 3), dtype=np.uint8)
    array[:, :25] = (255, 0, 0)
    array[:, 25:75] = (0, 255, 0)
    array[:, 75:] = (0, 0, 255)
    image = Image.fromarray(array)
    centre = np.asarray(square_crop(image, 50))
    assert (centre == (0, 255, 0)).all()
    left = np.asarray(square_crop(image, 50, center=(0, 25)))  # clamped to the image: columns 0–49
    assert np.array_equal(left, array[:, :50])
    assert square_crop(image, 32).size == (32, 32)


def test_duplicate_hash_ignores_resizing_but_not_different_pictures():
    a, b = noise_image(1), noise_image(2)
    assert bin(difference_hash(a) ^ difference_hash(a.resize((48, 40)))).count("1") <= 4
    assert bin(difference_hash(a) ^ difference_hash(b)).count("1") > 10


def test_files_and_zip_are_checked_and_skipped_with_reasons(tmp_path):
    paths = write_images(tmp_path, 3)
    noise_image(0).resize((72, 60)).save(tmp_path / "copy.png")  # a resized duplicate of img0
    noise_image(9, size=(20, 20)).save(tmp_path / "tiny.png")  # smaller than half the resolution
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "fake.png").write_text("not a png either")
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../escape.png", (tmp_path / "img1.png").read_bytes())
        handle.writestr("inner/new.png", _png_bytes(noise_image(5)))
        handle.writestr("readme.md", "hello")
    sources = [*paths, str(tmp_path / "copy.png"), str(tmp_path / "tiny.png"), str(tmp_path / "notes.txt"),
               str(tmp_path / "fake.png"), str(archive)]
    dataset = build_dataset(sources, "zqstyle", resolution=64)
    assert dataset.names == ("img0.png", "img1.png", "img2.png", "new.png")
    notes = " | ".join(dataset.notes)
    for expected in ("copy.png is a duplicate of img0.png", "tiny.png is 20×20", "notes.txt: not an image file",
                     "fake.png is not an image", "../escape.png: unsafe path", "readme.md: not an image"):
        assert expected in notes, expected
    assert all(image.size == (64, 64) for image in dataset.images)
    assert dataset.captions == ("zqstyle",) * 4


def _png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_too_few_images_and_bad_trigger_words_get_plain_messages(tmp_path):
    paths = write_images(tmp_path, 2)
    with pytest.raises(UserError, match="at least 3"):
        build_dataset(paths, "zqstyle", resolution=64)
    for bad in ("", "a", "two words", "1abc", "x" * 41, "../x"):
        with pytest.raises(UserError, match="trigger word"):
            check_trigger(bad)
    assert check_trigger("  arkstyle ") == "arkstyle"


def test_captions_keep_the_trigger_word_and_blip_captions_are_labelled(tmp_path):
    assert ensure_trigger("a girl, smiling", "zq") == "zq, a girl, smiling"
    assert ensure_trigger("a zq girl", "zq") == "a zq girl"
    assert ensure_trigger("a zqx girl", "zq") == "zq, a zqx girl"  # a longer word is not the trigger
    dataset = build_dataset(write_images(tmp_path, 3), "zqstyle", resolution=64, caption_model="tiny:blip")
    assert all(caption.startswith("zqstyle, ") and len(caption) > len("zqstyle, ") for caption in dataset.captions)
    assert any("test model" in note for note in dataset.notes)
    edited = dataset.with_captions(["one", "zqstyle two", "three"])
    assert edited.captions == ("zqstyle, one", "zqstyle two", "zqstyle, three")
    assert edited.digest() != dataset.digest()
    with pytest.raises(UserError, match="one each"):
        dataset.with_captions(["only one"])


def test_saved_dataset_loads_back_identically(tmp_path):
    dataset = build_dataset(write_images(tmp_path, 3), "zqstyle", resolution=64, face_aware=True)
    assert any("Face-aware crop" in note for note in dataset.notes)
    loaded = load_dataset(save_dataset(dataset, tmp_path / "saved"))
    assert loaded.digest() == dataset.digest() and loaded.names == dataset.names
    with pytest.raises(UserError, match="prepare one"):
        load_dataset(tmp_path / "nothing")
