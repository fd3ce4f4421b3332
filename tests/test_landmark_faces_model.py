"""Landmark faces: the seed's U-Net — its shape, conditioning, save/load, the resumable training job, sampling
with guidance, recorded runs, and (slow) that training makes samples follow the landmarks."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines.core.jobs import CancelToken, JobCancelled
from pipelines.landmark_faces import landmarks as L
from pipelines.landmark_faces import synthetic
from pipelines.landmark_faces.train import Batches, TrainConfig, draw_batch, read_state, synthetic_data, train
from pipelines.landmark_faces.unet import LandmarkUNet, UNetConfig, build, save_unet

SMALL = TrainConfig(name="t", image_size=32, width=8, steps=4, batch_size=4, synthetic_count=16,
                    checkpoint_every=2, precision="fp32")


def test_unet_has_the_seeds_layout_and_sees_both_conditions() -> None:
    model = build(UNetConfig(width=16, image_size=64, tags=("a", "b")))
    # the seed's widths (at width 64): DoubleConv 64 → Down 128 → Down 256 → Down 256 → 512, 512, 256 → Up 128
    # → Up 64 → Up 64; here at a quarter of them
    widths = [model.inc.block[4].num_channels, model.down1.convs[2].block[4].num_channels,
              model.down2.convs[2].block[4].num_channels, model.down3.convs[2].block[4].num_channels,
              *[block.block[4].num_channels for block in model.bottleneck],
              model.up1.convs[1].block[4].num_channels, model.up2.convs[1].block[4].num_channels,
              model.up3.convs[1].block[4].num_channels]
    assert [4 * w for w in widths] == [64, 128, 256, 256, 512, 512, 256, 128, 64, 64]
    assert isinstance(model.up1.convs[0].block[2], torch.nn.GELU)
    small = build(UNetConfig(width=8, image_size=32, tags=("a", "b")), seed=1).eval()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([500, 500])
    points = L.parametric_face()
    mask = torch.from_numpy(L.dot_mask(points, 32))[None, None].expand(2, -1, -1, -1)
    moved = torch.from_numpy(L.dot_mask(L.parametric_face(L.FaceParams(yaw=40)), 32))[None, None].expand(2, -1, -1, -1)
    tags = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    with torch.no_grad():
        base = small(x, t, mask, tags)
        assert base.shape == x.shape
        assert (small(x, t, moved, tags) - base).abs().mean() > 1e-4  # the landmarks reach the output
        assert (small(x, t, mask, torch.tensor([[0.0, 1.0], [0.0, 1.0]])) - base).abs().mean() > 1e-4  # the tags too
        # no tags = the learned null vector; tags are a mean of their embeddings (order-free)
        np.testing.assert_allclose(small.text_vector(torch.zeros(1, 2), 1)[0].numpy(), small.null_text.numpy())
        both = small.text_vector(torch.tensor([[1.0, 1.0]]), 1)[0]
        torch.testing.assert_close(both, small.tag_embedding.mean(dim=0))


def test_save_and_load_through_the_core_loader(tmp_path) -> None:
    from pipelines.core import loader
    from pipelines.landmark_faces import load_unet

    model = build(UNetConfig(width=8, image_size=32, tags=("smile",)), seed=3)
    path = save_unet(model, tmp_path / "m.safetensors", train_config=json.dumps({"beta_schedule": "linear"}))
    loaded = load_unet(str(path))
    assert isinstance(loaded, LandmarkUNet) and loaded.config == model.config
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert json.loads(loaded.train_config)["beta_schedule"] == "linear"
    tiny = loader.load_model("torch_module", "tiny:landmark_unet")
    assert isinstance(tiny, LandmarkUNet) and loader.model_info(tiny).test_model
    half = save_unet(model, tmp_path / "h.safetensors", half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size


def test_a_training_step_mirrors_landmarks_with_the_flipped_image() -> None:
    data = synthetic_data(replace(SMALL, synthetic_count=8))
    config = replace(SMALL, flip=1.0, condition_dropout=0.0, tag_mask=0.0)
    batches = Batches(data, data.vocabulary, config)
    batch = draw_batch(batches, config, step=0, timesteps=1000)
    again = draw_batch(batches, config, step=0, timesteps=1000)
    for key in batch:  # a step's randomness comes from (seed, step) alone: a resume repeats it
        torch.testing.assert_close(batch[key], again[key])
    # every image is flipped, and its mask is the mask of the MIRRORED landmarks (left/right parts swapped)
    for row in range(config.batch_size):
        image = batch["images"][row]
        match = [i for i in range(len(data.images)) if torch.allclose(image.flip(-1), batches.images[i])]
        assert match
        expected = L.dot_mask(L.flip_horizontal(data.points[match[0]]), 32)
        np.testing.assert_allclose(batch["masks"][row, 0].numpy(), expected, atol=1e-5)
        tags = {data.vocabulary[i] for i in np.flatnonzero(batch["tags"][row].numpy())}
        original = set(data.tags[match[0]])
        assert ("looking_left" in tags) == ("looking_right" in original)
    dropped = draw_batch(batches, replace(config, condition_dropout=1.0), step=1, timesteps=1000)
    assert float(dropped["masks"].abs().sum()) == 0 and float(dropped["tags"].sum()) == 0


def test_training_resumes_exactly_after_a_cancel(tmp_path) -> None:
    data = synthetic_data(SMALL)
    straight = train(SMALL, data, checkpoints=tmp_path / "a", out=tmp_path / "a.safetensors")
    token = CancelToken()

    def cancel_at_two(step: int, total: int, message: str) -> None:
        if step == 2:
            token.cancel()

    with pytest.raises(JobCancelled):
        train(SMALL, data, checkpoints=tmp_path / "b", callback=cancel_at_two, cancel=token)
    assert read_state(tmp_path / "b")["step"] == 2
    resumed = train(SMALL, data, checkpoints=tmp_path / "b", out=tmp_path / "b.safetensors")
    assert resumed.resumed_from == 2 and resumed.steps == 4
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=1e-4)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    assert len(list((tmp_path / "b").glob("step-*"))) <= 2
    changed = train(replace(SMALL, lr=5e-4), data, checkpoints=tmp_path / "b", out=tmp_path / "c.safetensors")
    assert changed.resumed_from == 0  # other settings: the old checkpoint is not reused


def test_sampling_is_seeded_and_guidance_uses_the_empty_condition() -> None:
    from pipelines.landmark_faces.generate import sample

    model = build(UNetConfig(width=8, image_size=32, tags=("smile",)), seed=0)
    points = L.parametric_face()
    one = sample(model, points, ["smile"], steps=3, guidance=2.0, seed=5, count=2)
    two = sample(model, points, ["smile"], steps=3, guidance=2.0, seed=6, count=1)
    assert one.seeds == [5, 6] and one.images[0].size == (32, 32)
    np.testing.assert_array_equal(np.asarray(one.images[1]), np.asarray(two.images[0]))  # seed 6 alone = 2nd
    unguided = sample(model, points, ["smile"], steps=3, guidance=1.0, seed=5)
    assert np.abs(np.asarray(unguided.images[0], float) - np.asarray(one.images[0], float)).mean() > 0
    noted = sample(model, points, ["smile", "cat_ears"], steps=1, seed=0)
    assert any("cat_ears" in note for note in noted.notes)
    with pytest.raises(L.LandmarkError):
        sample(model, np.full((24, 2), 2.0), [], steps=1)


def test_a_recorded_run_keeps_the_landmarks_and_reruns() -> None:
    from pipelines.core.pngmeta import read_png_metadata
    from pipelines.core.records import default_store
    from pipelines.core.runs import rerun
    from pipelines.landmark_faces.runs import run_generate

    points = L.parametric_face(L.FaceParams(yaw=20))
    record, output = run_generate(points, ["smile"], model="tiny:landmark_unet", steps=2, seed=3, count=2)
    assert len(record.outputs) == 2 and record.models[0]["test_model"]
    info = read_png_metadata(record.outputs[0])
    assert "Landmarks" in json.dumps(info, default=str)
    again = rerun(record.id, default_store())
    np.testing.assert_array_equal(np.asarray(output.images[0]),
                                  np.asarray(__import__("PIL.Image").Image.open(again.outputs[0]).convert("RGB")))


def test_folder_data_reads_images_with_landmark_files_and_names_the_bad_ones(tmp_path) -> None:
    from PIL import Image

    from pipelines.landmark_faces.train import DatasetError, folder_data

    faces = synthetic.make_faces(3, 64, seed=0)
    for index, face in enumerate(faces):
        Image.fromarray(face.image).save(tmp_path / f"f{index}.png")
    (tmp_path / "f0.json").write_text(L.to_json(faces[0].points, tags=list(faces[0].tags)))
    (tmp_path / "f1.json").write_text("{broken")
    data = folder_data(tmp_path, 32)
    assert len(data.images) == 1 and data.images.shape[1:] == (32, 32, 3)
    assert set(data.vocabulary) == set(faces[0].tags)
    assert any("f1.png" in note and "JSON" in note for note in data.skipped)
    assert any("f2.png" in note and "no f2.json" in note for note in data.skipped)
    with pytest.raises(DatasetError, match="holds no images"):
        folder_data(_empty(tmp_path), 32)


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


@pytest.mark.slow
def test_training_makes_samples_follow_the_landmarks() -> None:
    """At 32 px, a few hundred CPU steps lower the loss and cut the landmark error of samples (parts read back by
    colour from the synthetic palette) by at least 30% against the untrained network of the same shape. (The
    clean-image target, as the shipped model: an epsilon model needs far more steps before its samples are faces.)"""
    from pipelines.landmark_faces.evaluate import held_out_faces, sample_errors

    config = TrainConfig(name="follow", image_size=32, width=8, steps=TEST_STEPS, batch_size=16, lr=2e-3,
                         synthetic_count=256, synthetic_hair="brown_hair", synthetic_eyes="blue_eyes",
                         prediction_type="sample", precision="fp32", checkpoint_every=10**6)
    result = train(config, synthetic_data(config), resume=False)
    losses = result.losses
    assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:10])
    faces = held_out_faces(config, 12)
    trained, _ = sample_errors(result.model, faces, steps=20)
    untrained_model = build(result.model.config, seed=config.seed)
    untrained, _ = sample_errors(untrained_model, faces, steps=20)
    assert np.mean(trained) <= 0.7 * np.mean(untrained), (np.mean(trained), np.mean(untrained))


TEST_STEPS = 250


def test_the_controlnet_path_draws_with_the_openpose_face_of_our_landmarks() -> None:
    from pipelines.core.pngmeta import read_png_metadata
    from pipelines.landmark_faces.runs import controlnet_request, run_controlnet

    points = L.parametric_face(L.FaceParams(yaw=-20, mouth_open=0.8))
    request = controlnet_request(points, "1girl, smile", size=64)
    unit = request.controlnets[0]
    np.testing.assert_array_equal(np.asarray(unit.image), np.asarray(L.openpose_face(points, 64, 64)))
    record, output = run_controlnet(points, "1girl, smile", model="tiny:sd15", controlnet="tiny:controlnet",
                                    steps=2, size=64, seed=1)
    assert output.images[0].size == (64, 64) and record.params["landmark_faces"]["path"] == "controlnet"
    assert any(model.get("test_model") for model in output.models)
    assert "ControlNet" in json.dumps(read_png_metadata(record.outputs[0]), default=str)


def test_compare_reports_every_metric_with_intervals_against_both_baselines() -> None:
    """Landmark-guided against text-only and reference-only (tiny SD 1.5 + tiny IP-Adapter), scored by the metrics
    pipeline: SSIM/PSNR against the reference face, FID/KID against synthetic faces, landmark error."""
    from pipelines.landmark_faces.compare import ReferenceOnly, compare_on_face

    result = compare_on_face(L.parametric_face(), ["smile"], model="tiny:landmark_unet", steps=2, count=3,
                             reference_only=ReferenceOnly(steps=2, size=64), networks={"inception": "tiny:inception"})
    for baseline in ("text_only", "reference_only"):
        assert {f"{baseline}:{key}" for key in ("ssim", "psnr", "fid", "kid", "landmark_error")} <= set(result.rows)
    for row in result.rows.values():
        assert row["low"] <= row["high"]
    assert "Test model" in result.markdown and "not real scores" in result.markdown
    assert len(result.gallery) == 1 + 3 * 3
    without = compare_on_face(L.parametric_face(), ["smile"], model="tiny:landmark_unet", steps=2, count=2,
                              networks={"inception": "tiny:inception"})
    assert "Reference-only (IP-Adapter) was not run" in without.markdown
    assert not any(key.startswith("reference_only") for key in without.rows)


@pytest.mark.parametrize("yaw", [-35, -20, -5, 0, 8, 20, 35])
def test_the_text_only_orientation_word_agrees_with_the_training_tags(yaw: float) -> None:
    from pipelines.landmark_faces.compare import turn_tag

    params = L.FaceParams(yaw=yaw)
    expected = [tag for tag in synthetic.tags_for(params, "brown_hair", "blue_eyes") if tag in synthetic.TURN_TAGS]
    assert [turn_tag(L.parametric_face(params))] == expected


def test_the_controlnet_path_takes_a_reference_face_through_ip_adapter() -> None:
    from PIL import Image

    from pipelines.landmark_faces.runs import run_controlnet

    points = L.parametric_face()
    face = Image.new("RGB", (64, 64), (250, 200, 180))
    plain = run_controlnet(points, "1girl", model="tiny:sd15", controlnet="tiny:controlnet", steps=2, size=64)[1]
    record, steered = run_controlnet(points, "1girl", model="tiny:sd15", controlnet="tiny:controlnet", steps=2,
                                     size=64, reference=face, reference_scale=1.0)
    assert record.params["reference"]["scale"] == 1.0
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(steered.images[0]))


def test_a_photo_mesh_drives_the_mediapipe_face_condition_and_its_absence_is_explained() -> None:
    from PIL import Image
    from skimage import data

    from pipelines.core.errors import UserError
    from pipelines.landmark_faces.runs import controlnet_request, run_controlnet

    found = L.from_photo(Image.fromarray(data.astronaut()))
    request = controlnet_request(found.points, "1girl", size=64, condition="mediapipe", mesh=found.mesh)
    unit = request.controlnets[0]
    assert unit.module == "mediapipe_face"
    np.testing.assert_array_equal(np.asarray(unit.image), np.asarray(L.face_mesh_drawing(found.mesh, 64, 64)))
    with pytest.raises(UserError, match="photo"):
        controlnet_request(found.points, "1girl", size=64, condition="mediapipe")
    record, _ = run_controlnet(found.points, "1girl", steps=1, size=64, condition="mediapipe", mesh=found.mesh)
    assert record.params["landmark_faces"]["condition"] == "mediapipe"


def test_hub_sources_with_a_sub_folder_are_split_and_others_are_not(tmp_path) -> None:
    from pipelines.diffusion.models import hub_subfolder

    assert hub_subfolder("CrucibleAI/ControlNetMediaPipeFace/diffusion_sd15") == (
        "CrucibleAI/ControlNetMediaPipeFace", "diffusion_sd15")
    for plain in ("lllyasviel/control_v11p_sd15_openpose", "tiny:controlnet", str(tmp_path), "/abs/a/b/c"):
        assert hub_subfolder(plain) == (plain, "")


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_training_follows_its_learning_rate_schedule(monkeypatch, tmp_path, schedule) -> None:
    """The rate each optimizer step used: cosine warms up over the first step (2% of 10, rounded up to one), then
    decays strictly to 5% of the peak at the last step; constant keeps the peak (the recipe before)."""
    used: list[float] = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    config = replace(SMALL, steps=10, lr=1e-3, lr_schedule=schedule, checkpoint_every=10**6)
    train(config, synthetic_data(config), resume=False, checkpoints=tmp_path)
    assert len(used) == 10
    if schedule == "constant":
        assert used == [1e-3] * 10
        return
    assert used[0] == pytest.approx(1e-3) and used[-1] == pytest.approx(0.05e-3)
    assert used[1] == pytest.approx(1e-3)  # the decay starts from the peak after the warm-up step
    assert all(later < earlier for earlier, later in zip(used[1:], used[2:], strict=False))
