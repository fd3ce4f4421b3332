"""Neural style pipeline: both checkpoint layouts, sizes, strength, colour preservation, training, runs.

The reference networks below follow the original repositories' code (pytorch/examples
fast_neural_style/neural_style/transformer_net.py and rrmina/fast-neural-style-pytorch/transformer.py) so the
loaded weights are checked against an independent forward pass, not against our own module.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from pipelines.core import loader, pngmeta, runs
from pipelines.core.jobs import CancelToken, JobCancelled
from pipelines.core.records import RunStore
from pipelines.core.safeweights import UnsafeWeightsError, load_safetensors

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ns-cache")  # the tiny style is built once for this file


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, module_cache):
    monkeypatch.setenv("ASL_CACHE", str(module_cache))
    monkeypatch.setenv("ASL_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loader.CACHE.clear()
    yield
    loader.CACHE.clear()


# ---------------------------------------------------------------------------------------------- references
class RefConvLayer(nn.Module):  # pytorch/examples ConvLayer
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class RefResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class RefUpsampleConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        if self.upsample:
            x = nn.functional.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class RefTransformerNet(nn.Module):  # pytorch/examples TransformerNet: RGB 0–255 in and out
    def __init__(self):
        super().__init__()
        self.conv1 = RefConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = RefConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = RefConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (RefResidualBlock(128) for _ in range(5))
        self.deconv1 = RefUpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = RefUpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = RefConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


class RrConvLayer(nn.Module):  # rrmina ConvLayer
    def __init__(self, in_channels, out_channels, kernel_size, stride, norm="instance"):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv_layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride)
        self.norm_type = norm
        if norm == "instance":
            self.norm_layer = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, x):
        x = self.conv_layer(self.reflection_pad(x))
        return x if self.norm_type == "None" else self.norm_layer(x)


class RrResidualLayer(nn.Module):
    def __init__(self, channels=128, kernel_size=3):
        super().__init__()
        self.conv1 = RrConvLayer(channels, channels, kernel_size, stride=1)
        self.relu = nn.ReLU()
        self.conv2 = RrConvLayer(channels, channels, kernel_size, stride=1)

    def forward(self, x):
        return self.conv2(self.relu(self.conv1(x))) + x


class RrDeconvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, output_padding):
        super().__init__()
        self.conv_transpose = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                                 output_padding)
        self.norm_layer = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, x):
        return self.norm_layer(self.conv_transpose(x))


class RrTransformerNetwork(nn.Module):  # rrmina TransformerNetwork: BGR 0–255 in and out
    def __init__(self):
        super().__init__()
        self.ConvBlock = nn.Sequential(RrConvLayer(3, 32, 9, 1), nn.ReLU(), RrConvLayer(32, 64, 3, 2), nn.ReLU(),
                                       RrConvLayer(64, 128, 3, 2), nn.ReLU())
        self.ResidualBlock = nn.Sequential(*(RrResidualLayer(128, 3) for _ in range(5)))
        self.DeconvBlock = nn.Sequential(RrDeconvLayer(128, 64, 3, 2, 1), nn.ReLU(), RrDeconvLayer(64, 32, 3, 2, 1),
                                         nn.ReLU(), RrConvLayer(32, 3, 9, 1, norm="None"))

    def forward(self, x):
        return self.DeconvBlock(self.ResidualBlock(self.ConvBlock(x)))


def _randomized(net: nn.Module, seed: int) -> nn.Module:
    """Random weights with non-trivial InstanceNorm affine parameters (defaults are 1 and 0)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.InstanceNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _save(state_dict: dict, path: Path) -> Path:
    save_file({key: value.contiguous() for key, value in state_dict.items()}, str(path))
    return path


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-12))


def _photo(width: int, height: int, seed: int = 0, low: int = 0, high: int = 255) -> Image.Image:
    """A smooth colourful test image (gradients plus a little noise) with values in [low, high]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [np.sin(xx / (7 + 3 * c) + c) * np.cos(yy / (9 + 2 * c) - c) for c in range(3)]
    base = (np.stack(channels, -1) + 1) / 2 + rng.normal(0, 0.03, (height, width, 3))
    return Image.fromarray((low + np.clip(base, 0, 1) * (high - low)).round().astype(np.uint8), "RGB")


# ---------------------------------------------------------------------------------------------- layouts
def test_detect_layout_from_key_names():
    from pipelines.neural_style.network import detect_layout

    assert detect_layout(RefTransformerNet().state_dict()) == "pytorch_examples"
    assert detect_layout(RrTransformerNetwork().state_dict()) == "rrmina"
    assert detect_layout({f"module.{k}": v for k, v in RrTransformerNetwork().state_dict().items()}) == "rrmina"
    with pytest.raises(ValueError, match="not a fast-neural-style"):
        detect_layout({"encoder.weight": torch.zeros(1)})


def test_pytorch_examples_checkpoint_with_stale_keys_matches_reference(tmp_path):
    from pipelines.neural_style import load_style

    reference = _randomized(RefTransformerNet(), seed=1)
    state = reference.state_dict()
    # old pytorch/examples checkpoints (candy, mosaic, rain_princess, udnie) carry InstanceNorm running stats
    for prefix in ["in1", "in2", "res1.in1", "res3.in2", "in5"]:
        channels = state[f"{prefix}.weight"].shape[0]
        state[f"{prefix}.running_mean"] = torch.randn(channels)
        state[f"{prefix}.running_var"] = torch.rand(channels)
    model = load_style(_save(state, tmp_path / "old_examples.safetensors"))
    assert model.layout == "pytorch_examples"

    x = torch.rand(1, 3, 68, 52)
    with torch.no_grad():
        expected = (reference(x * 255).clamp(0, 255) / 255)
    with torch.inference_mode():
        ours = model(x)
    assert ours.shape == x.shape
    assert _relative_error(ours, expected) < 1e-4


def test_rrmina_checkpoint_matches_reference_on_bgr(tmp_path):
    from pipelines.neural_style import load_style

    reference = _randomized(RrTransformerNetwork(), seed=2)
    model = load_style(_save(reference.state_dict(), tmp_path / "rrmina.safetensors"))
    assert model.layout == "rrmina"

    x = torch.rand(1, 3, 64, 48)
    with torch.no_grad():  # rrmina reads images with OpenCV: BGR, 0–255, no mean subtraction
        expected_bgr = reference(x.flip(1) * 255).clamp(0, 255) / 255
    with torch.inference_mode():
        ours = model(x)
    assert _relative_error(ours, expected_bgr.flip(1)) < 1e-4
    # and the colour order matters: feeding RGB to the rrmina network gives something else
    with torch.no_grad():
        wrong = reference(x * 255).clamp(0, 255) / 255
    assert _relative_error(ours, wrong) > 1e-2


def test_fast_inference_path_equals_plain_forward_on_odd_sizes():
    from pipelines.neural_style.network import ExamplesTransformerNet, StyleNet

    net = _randomized(ExamplesTransformerNet(), seed=3)
    fast, plain = StyleNet(net, "pytorch_examples").eval(), StyleNet(net, "pytorch_examples", fast=False).eval()
    x = torch.rand(1, 3, 37, 70)
    with torch.inference_mode():
        assert _relative_error(fast(x), plain(x)) < 1e-5
    with torch.no_grad():  # the reference network on the same size, cropped, is what we return
        expected = RefTransformerNet().eval()
        expected.load_state_dict(net.state_dict())
        assert _relative_error(fast(x), (expected(x * 255)[..., :37, :70].clamp(0, 255) / 255)) < 1e-4
        before = fast(x)
        net.deconv3.conv2d.bias.add_(40.0)  # an in-place weight update (a training step) must not be missed
        assert _relative_error(fast(x), plain(x)) < 1e-5 and _relative_error(fast(x), before) > 0.05


@pytest.mark.parametrize("size", [(257, 131), (130, 67), (16, 16)])
def test_output_size_equals_input_size(size):
    from pipelines.neural_style import load_style, stylize

    result = stylize([_photo(*size)], load_style("tiny:style"), max_size=1024)
    assert result.images[0].size == size
    assert result.seconds > 0


def test_max_size_downscales_the_long_side():
    from pipelines.neural_style import load_style, stylize

    result = stylize(_photo(300, 120), load_style("tiny:style"), max_size=100)
    assert result.images[0].size == (100, 40)
    with pytest.raises(ValueError, match="Maximum size"):
        stylize(_photo(30, 30), load_style("tiny:style"), max_size=100_000)


# ---------------------------------------------------------------------------------------------- controls
def test_strength_zero_returns_the_input_exactly_and_blends_in_between():
    from pipelines.neural_style import load_style, stylize

    content = _photo(90, 70, seed=4)
    model = load_style("tiny:style")
    assert np.array_equal(np.asarray(stylize([content], model, strength=0.0).images[0]), np.asarray(content))
    full = np.asarray(stylize([content], model, strength=1.0).images[0]).astype(np.float32)
    half = np.asarray(stylize([content], model, strength=0.5).images[0]).astype(np.float32)
    assert np.abs(full - np.asarray(content)).mean() > 5  # the style network does change the image
    assert np.abs(half - (full + np.asarray(content)) / 2).max() <= 1.0
    with pytest.raises(ValueError, match="Strength"):
        stylize([content], model, strength=1.5)


class _GreyInverter(nn.Module):
    """A stand-in style network with a known output: inverted, compressed, desaturated luminance."""

    def forward(self, x):
        grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand(-1, 3, -1, -1)
        return 0.3 + 0.4 * (1 - grey)


def _ycbcr(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("YCbCr")).astype(np.float32)


def test_preserve_color_keeps_the_content_chroma_and_the_style_luma():
    from pipelines.neural_style import stylize

    content = _photo(80, 64, seed=5, low=70, high=185)
    model = _GreyInverter()
    stylized = _ycbcr(stylize([content], model).images[0])
    kept = _ycbcr(stylize([content], model, preserve_color=True).images[0])
    original = _ycbcr(content)
    chroma_error = np.abs(kept[..., 1:] - original[..., 1:])
    assert chroma_error.mean() < 1.0 and np.percentile(chroma_error, 99) <= 3
    assert np.abs(kept[..., 0] - stylized[..., 0]).mean() < 1.0  # luma from the stylized image
    assert np.abs(kept[..., 0] - original[..., 0]).mean() > 20  # … which is not the content's luma
    assert np.abs(stylized[..., 1:] - original[..., 1:]).mean() > 5  # without the option the chroma is lost


# ---------------------------------------------------------------------------------------------- bad input
def test_pickle_renamed_safetensors_is_refused_without_unpickling(tmp_path):
    from pipelines.neural_style import import_style, load_style

    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "style.safetensors"
    evil.write_bytes(pickle.dumps({"conv1.conv2d.weight": Payload()}))
    torch_pickle = tmp_path / "torch.safetensors"
    torch.save(RefTransformerNet().state_dict(), torch_pickle)
    for path in (evil, torch_pickle):
        with pytest.raises(UnsafeWeightsError, match="not a safetensors file"):
            load_style(path)
        with pytest.raises(UnsafeWeightsError):
            import_style(path, "evil")
    assert not marker.exists()


def test_unknown_style_lists_the_available_ones():
    from pipelines.neural_style import load_style

    with pytest.raises(ValueError, match=r"Unknown style 'van_gogh_please'.*rain_princess.*tiny:style"):
        load_style("van_gogh_please")


def test_pretrained_style_offline_says_so_plainly():
    from pipelines.neural_style import StyleUnavailableError, load_style

    with pytest.raises(StyleUnavailableError, match="not downloaded yet and the Hub/internet cannot be reached"):
        load_style("rain_princess")


def _examples_zip(bundle: Path) -> dict[str, nn.Module]:
    """A stand-in for pytorch/examples' saved_models.zip: old .pth files with stale keys; the reference nets."""
    references = {}
    with zipfile.ZipFile(bundle, "w") as archive:
        for seed, name in enumerate(["candy", "mosaic", "rain_princess", "udnie"]):
            references[name] = _randomized(RefTransformerNet(), seed=10 + seed)
            state = dict(references[name].state_dict())
            state["in1.running_mean"], state["in1.running_var"] = torch.zeros(32), torch.ones(32)
            buffer = io.BytesIO()
            torch.save(state, buffer)
            archive.writestr(f"saved_models/{name}.pth", buffer.getvalue())
    return references


def test_pretrained_zip_is_converted_to_safetensors_on_first_use(tmp_path, monkeypatch):
    """The pytorch/examples download (a zip of old .pth files with stale keys) becomes cached safetensors."""
    from pipelines.neural_style import list_styles, load_style, styles

    bundle = tmp_path / "saved_models.zip"
    references = _examples_zip(bundle)
    downloads = []
    monkeypatch.setattr(styles, "offline_reason", lambda url: None)
    monkeypatch.setattr(styles, "download_file", lambda url, target, max_bytes, **kwargs: (
        downloads.append(url), target.write_bytes(bundle.read_bytes())))

    model = load_style("rain_princess")
    assert downloads == [styles.EXAMPLES_ZIP]
    for name in references:  # one download converts all four
        tensors, metadata = load_safetensors(styles.pretrained_path(name))
        assert metadata["layout"] == "pytorch_examples" and metadata["architecture"] == "johnson_transformer_net"
        assert "in1.running_mean" not in tensors
    assert all(entry.available for entry in list_styles() if entry.name in references)
    x = torch.rand(1, 3, 40, 44)
    with torch.no_grad():
        expected = references["rain_princess"](x * 255).clamp(0, 255) / 255
    with torch.inference_mode():
        assert _relative_error(model(x), expected) < 1e-4
    load_style("udnie")
    assert len(downloads) == 1  # converted files are used from then on


def test_the_first_download_of_a_pretrained_style_reports_its_progress(tmp_path, monkeypatch):
    """A real HTTP download (from a local server) reports bytes done of the announced size through run_stylize."""
    import dataclasses
    import functools
    import http.server
    import threading

    from pipelines.neural_style import run_stylize, styles

    monkeypatch.setenv("ASL_CACHE", str(tmp_path / "cache"))  # nothing downloaded yet, whatever ran before
    served = tmp_path / "served"
    served.mkdir()
    bundle = served / "saved_models.zip"
    _examples_zip(bundle)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/saved_models.zip"
        monkeypatch.setattr(styles, "offline_reason", lambda url: None)
        for name in ("candy", "mosaic", "rain_princess", "udnie"):
            monkeypatch.setitem(styles.PRETRAINED, name, dataclasses.replace(styles.PRETRAINED[name], url=url))
        photo = tmp_path / "photo.png"
        _photo(40, 30).save(photo)
        messages = []
        run_stylize([str(photo)], "rain_princess", store=RunStore(tmp_path / "runs.sqlite"),
                    callback=lambda step, total, message: messages.append((step, total, message)))
    finally:
        httpd.shutdown()
    downloading = [item for item in messages if item[2].startswith("Downloading style 'rain_princess'")]
    size = bundle.stat().st_size
    assert downloading[0][0] == 0 and downloading[-1][:2] == (size, size)  # from nothing to the whole file
    assert all(total == size for _, total, _ in downloading) and f"of {size / 2**20:.1f} MB" in downloading[-1][2]
    assert any("downloaded and converted" in message for _, _, message in messages)
    assert messages[-1][2] == "Stylized image 1 of 1"


def test_package_import_stays_light():
    code = ("import sys, pipelines.neural_style as ns; assert ns.METHOD_CARD.seed_document == '002'; "
            "print(sorted(m for m in ('torch', 'numpy', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------- training
def _content_files(folder: Path, count: int, size: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"content_{index}.png"
        _photo(size + 7 * index, size, seed=20 + index).save(path)
        paths.append(str(path))
    return paths


def _style_image(tmp_path: Path) -> str:
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::8] = (230, 40, 90)
    stripes[::8, :] = (20, 60, 200)
    path = tmp_path / "style.png"
    Image.fromarray(stripes).save(path)
    return str(path)


def _torchvision_vgg_features(state: dict) -> nn.Module:
    """torchvision's own VGG16 `features` (up to relu4_3) with the given weights: the independent reference."""
    from torchvision.models import vgg16

    features = vgg16(weights=None).features[:23]
    features.load_state_dict(state)
    return features.eval()


def _reference_grams(features: nn.Module, images_0_255: torch.Tensor) -> list[torch.Tensor]:
    """Gram matrices at relu1_2, relu2_2, relu3_3, relu4_3 (torchvision indices 3, 8, 15, 22) of ImageNet-
    normalised images, as in Johnson et al. / pytorch/examples: G = F·Fᵀ / (C·H·W)."""
    from torchvision.models import VGG16_Weights

    preset = VGG16_Weights.IMAGENET1K_V1.transforms()
    mean, std = torch.tensor(preset.mean).view(1, 3, 1, 1), torch.tensor(preset.std).view(1, 3, 1, 1)
    h, grams = (images_0_255 / 255.0 - mean) / std, []
    for index, layer in enumerate(features):
        h = layer(h)
        if index in (3, 8, 15, 22):
            b, c, height, width = h.shape
            flat = h.reshape(b, c, height * width)
            grams.append(flat @ flat.transpose(1, 2) / (c * height * width))
    return grams


def test_vgg16_features_equal_torchvisions_vgg16_given_the_same_weights():
    from torchvision.models import vgg16

    from pipelines.neural_style.train import VGG_STYLE_LAYERS, VGGFeatures, _load_features, vgg16_features

    torch.manual_seed(3)
    torchvision_state = vgg16(weights=None).state_dict()  # "features.N.*" and the classifier, as published
    ours = vgg16_features()
    _load_features(ours, torchvision_state)
    reference = _torchvision_vgg_features({key.removeprefix("features."): value for key, value in
                                           torchvision_state.items()
                                           if key.startswith("features.") and int(key.split(".")[1]) < 23})
    x = torch.rand(2, 3, 40, 48) * 255
    with torch.no_grad():
        got = VGGFeatures(ours)(x)
        from torchvision.models import VGG16_Weights

        preset = VGG16_Weights.IMAGENET1K_V1.transforms()
        h = (x / 255.0 - torch.tensor(preset.mean).view(1, 3, 1, 1)) / torch.tensor(preset.std).view(1, 3, 1, 1)
        expected = {}
        for index, layer in enumerate(reference):
            h = layer(h)
            if index in (3, 8, 15, 22):
                expected[VGG_STYLE_LAYERS[(3, 8, 15, 22).index(index)]] = h
    for name in VGG_STYLE_LAYERS:
        assert got[name].shape == expected[name].shape
        assert _relative_error(got[name], expected[name]) < 1e-5, name
    with pytest.raises(RuntimeError):  # a renamed layer is an error, not a silently random one
        _load_features(vgg16_features(), {key.replace("features.10.", "features.11."): value
                                          for key, value in torchvision_state.items()})


def test_short_training_run_lowers_the_loss_and_adds_a_style(tmp_path):
    from pipelines.core.loader import model_info
    from pipelines.neural_style import list_styles, load_style, run_stylize, stylize, train_style_job
    from pipelines.neural_style.network import ExamplesTransformerNet
    from pipelines.neural_style.train import vgg16_features

    content = _content_files(tmp_path / "content", 2, 64)
    style_path = _style_image(tmp_path)
    # a high learning rate and a low content weight let the style show within 40 small steps
    result = train_style_job(style_path, content, name="stripes", steps=40, image_size=48, batch_size=2, lr=1e-2,
                             content_weight=1e3, vgg_weights="random", checkpoint_dir=tmp_path / "ckpt")
    assert result.steps == 40 and len(result.losses) == 40
    assert not result.vgg_pretrained and "RANDOM" in result.vgg_note
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.92 * first, (first, last)
    style_first, style_last = np.mean(result.style_losses[:5]), np.mean(result.style_losses[-5:])
    assert style_last < 0.75 * style_first, (style_first, style_last)  # the style term itself falls

    # Outputs move toward the style: the Gram distance to the style image, measured with torchvision's VGG16
    # holding the same (seeded, random) weights the loss used, is smaller after training than before it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(42)  # train()'s default seed builds the loss network, then the untrained style network
        loss_vgg_state = vgg16_features().state_dict()
        torch.manual_seed(42)
        untrained = ExamplesTransformerNet().eval()
    reference_vgg = _torchvision_vgg_features(loss_vgg_state)
    photos = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((48, 48)), np.float32))
                          .permute(2, 0, 1) for p in content])
    style = torch.from_numpy(np.asarray(Image.open(style_path).convert("RGB"), np.float32)).permute(2, 0, 1)[None]
    trained = load_style("stripes")
    with torch.no_grad():
        style_grams = _reference_grams(reference_vgg, style)
        before = _reference_grams(reference_vgg, untrained(photos).clamp(0, 255))
        after = _reference_grams(reference_vgg, trained(photos / 255.0) * 255.0)
    distance = lambda grams: sum(float(((g - s) ** 2).mean()) for g, s in zip(grams, style_grams, strict=True))  # noqa: E731
    assert distance(after) < 0.85 * distance(before), (distance(before), distance(after))  # measured: 0.71×

    assert result.path.exists() and result.path.parent.name == "styles"
    entry = next(entry for entry in list_styles() if entry.name == "stripes")
    assert entry.kind == "trained" and "test only" in entry.label
    image = stylize([_photo(50, 40)], load_style("stripes")).images[0]
    assert image.size == (50, 40)
    # made with a random-weight VGG16: labelled as a test model in the file, the loader, records and PNGs
    _, metadata = load_safetensors(result.path)
    assert metadata["test_model"] == "true" and "random-weight VGG16" in metadata["test_note"]
    assert model_info(trained).test_model
    store = RunStore(tmp_path / "runs.sqlite")
    record = run_stylize(content[:1], "stripes", store=store)
    stored = store.get(record.id)
    assert stored.models[0]["test_model"] is True and "random-weight VGG16" in stored.models[0]["test_note"]
    assert "random-weight VGG16" in pngmeta.read_png_metadata(record.outputs[0])["settings"]["Test model"]


def test_checkpoint_cancel_and_resume_continue_from_the_saved_step(tmp_path):
    from pipelines.neural_style import train_style_job
    from pipelines.neural_style.network import build_transformer_net
    from pipelines.neural_style.train import read_checkpoint

    content = _content_files(tmp_path / "content", 3, 32)
    style = _style_image(tmp_path)
    options = dict(name="resumable", steps=8, image_size=32, batch_size=2, vgg_weights="random",
                   checkpoint_every=3)
    token = CancelToken()

    def cancel_at_five(step, total, message):
        if step == 5:
            token.cancel()

    with pytest.raises(JobCancelled):
        train_style_job(style, content, checkpoint_dir=tmp_path / "a", callback=cancel_at_five, cancel=token,
                        **options)
    state = read_checkpoint(tmp_path / "a")
    assert state["step"] == 5 and len(state["losses"]) == 5
    tensors, metadata = load_safetensors(tmp_path / "a" / state["model"])  # a valid, loadable checkpoint
    build_transformer_net(metadata, tensors)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        ["state.json", state["model"], state["optimizer"]])

    resumed = train_style_job(style, content, checkpoint_dir=tmp_path / "a", **options)
    assert resumed.resumed_from == 5 and resumed.steps == 8 and len(resumed.losses) == 8
    assert resumed.losses[:5] == state["losses"]

    straight = train_style_job(style, content, checkpoint_dir=tmp_path / "b", **{**options, "name": "straight"})
    a, _ = load_safetensors(resumed.path)
    b, _ = load_safetensors(straight.path)
    assert all(torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4) for key in a)  # same as never stopping
    assert np.allclose(resumed.losses, straight.losses, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- runs
def test_run_stylize_records_pngs_with_metadata_and_reruns(tmp_path):
    from pipelines.neural_style import run_stylize

    first, second = tmp_path / "a.png", tmp_path / "b.jpg"
    _photo(96, 64, seed=7).save(first)
    _photo(61, 83, seed=8).save(second)
    broken = tmp_path / "notes.png"
    broken.write_text("not an image")
    store = RunStore(tmp_path / "runs.sqlite")

    record = run_stylize([str(first), str(broken), str(second)], "tiny:style", 0.7, True, 512, store=store)
    assert len(record.outputs) == 2 and len(record.params["skipped"]) == 1
    metadata = pngmeta.read_png_metadata(record.outputs[0])["settings"]
    assert metadata["Style"] == "tiny:style" and metadata["Strength"] == 0.7 and metadata["Preserve colors"] is True
    assert metadata["Layout"] == "pytorch_examples" and metadata["Model id"] == "tiny:style"
    assert Image.open(record.outputs[1]).size == (61, 83)
    stored = store.get(record.id)
    assert stored.status == "done" and stored.models[0]["test_model"] is True
    assert {"load", "stylize", "save"} <= set(stored.timings)

    again = runs.rerun(record.id, store)
    assert again.id != record.id and len(again.outputs) == 2
    for old, new in zip(record.outputs, again.outputs, strict=True):
        assert np.array_equal(np.asarray(Image.open(old)), np.asarray(Image.open(new)))


def test_run_stylize_with_no_usable_image_says_why(tmp_path):
    from pipelines.neural_style import run_stylize

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ValueError, match="None of the images can be used.*bad.jpg"):
        run_stylize([str(bad)], "tiny:style", store=RunStore(tmp_path / "runs.sqlite"))


def test_cli_stylize_writes_pngs(tmp_path, capsys):
    from pipelines.neural_style.__main__ import main

    source = tmp_path / "photo.png"
    _photo(40, 30).save(source)
    assert main(["stylize", str(source), "--style", "tiny:style", "--strength", "0.5", "--out",
                 str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    written = Path(captured.out.strip().splitlines()[-1])
    assert written.exists() and pngmeta.read_png_metadata(written)["settings"]["Strength"] == 0.5
    assert pngmeta.read_png_metadata(written)["settings"]["Test model"] == "random weights, output is noise"
    assert "note: test model (random weights, output is noise)" in captured.err
    assert main(["stylize", str(source), "--style", "nope"]) == 2


def test_user_file_of_another_model_gets_a_plain_error(tmp_path):
    from pipelines.neural_style import import_style, load_style

    other = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(4, 4)}, str(other), metadata={"architecture": "tiny_inception"})
    with pytest.raises(loader.ModelLoadError, match="not a fast-neural-style transformer network"):
        load_style(other)
    with pytest.raises(ValueError, match="not a fast-neural-style transformer network"):
        import_style(other, "lora")


def test_imported_style_appears_in_the_list_and_loads(tmp_path):
    from pipelines.neural_style import import_style, list_styles, load_style

    source = _save(_randomized(RrTransformerNetwork(), seed=6).state_dict(), tmp_path / "Mine.safetensors")
    assert import_style(source, "my ink") == "my_ink"
    entry = next(entry for entry in list_styles() if entry.name == "my_ink")
    assert entry.kind == "trained" and entry.label == "my_ink (yours)"
    assert load_style("my_ink").layout == "rrmina"
    with pytest.raises(ValueError, match="built-in style"):
        import_style(source, "candy")


def test_training_is_a_recorded_run_with_a_preview_and_can_be_rerun(tmp_path):
    from pipelines.neural_style import run_train_style

    store = RunStore(tmp_path / "runs.sqlite")
    content = _content_files(tmp_path / "content", 2, 32)
    bundle = tmp_path / "photos.zip"
    with zipfile.ZipFile(bundle, "w") as archive:  # content as a zip, with a folder and a note inside
        for path in content:
            archive.write(path, f"holiday/{Path(path).name}")
        archive.writestr("notes.txt", "not an image")
    record, result = run_train_style(_style_image(tmp_path), [str(bundle)], name="recorded", store=store, steps=3,
                                     image_size=32, batch_size=2, vgg_weights="random",
                                     checkpoint_dir=tmp_path / "ckpt")
    saved = store.get(record.id)
    assert saved.status == "done" and saved.params["task"] == "train" and saved.params["steps"] == 3
    unpacked = [Path(path) for path in saved.params["content_images"]]  # named as inside the zip, kept for re-runs
    assert [path.relative_to(unpacked[0].parents[1]).as_posix() for path in unpacked] == \
        [f"holiday/{Path(path).name}" for path in content]
    assert unpacked[0].parents[2].name == f"content-{record.id}" and all(path.exists() for path in unpacked)
    assert saved.params["zip_skipped"] == ["photos.zip: notes.txt: not an image, skipped"]
    assert saved.models[0]["test_model"] is True and saved.params["test_model"] is True  # random VGG16: a test
    preview = pngmeta.read_png_metadata(saved.outputs[0])["settings"]
    assert "random-weight VGG16" in preview["Test model"] and "RANDOM" in preview["Loss network"]
    assert saved.params["style_path"] == str(result.path) and {"train", "preview"} <= set(saved.timings)
    assert len(saved.outputs) == 1 and pngmeta.read_png_metadata(saved.outputs[0])["settings"]["Style"] == "recorded"
    again = runs.rerun(record.id, store)  # same settings: the finished checkpoint is reused, and said so
    assert again.id != record.id and store.get(again.id).params["task"] == "train"
    assert store.get(again.id).params["final_loss"] == saved.params["final_loss"]
    changed = run_train_style(_style_image(tmp_path), [str(bundle)], name="recorded", store=store, steps=3,
                              image_size=32, batch_size=2, lr=1e-2, vgg_weights="random",
                              checkpoint_dir=tmp_path / "ckpt")[1]
    assert changed.resumed_from == 0 and changed.losses != result.losses  # new settings: trained afresh


def test_refused_training_input_leaves_nothing_unpacked(tmp_path):
    """A zip bomb is refused before writing; a zip of non-images is unpacked, refused, and removed again."""
    from pipelines.core import settings
    from pipelines.core.archives import MAX_RATIO, ArchiveError
    from pipelines.neural_style import run_train_style

    store = RunStore(tmp_path / "runs.sqlite")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("photo.png", b"\0" * (40 * 2**20))
        assert archive.getinfo("photo.png").file_size / archive.getinfo("photo.png").compress_size > MAX_RATIO
    fake = tmp_path / "fake.zip"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("photo.png", b"this is text, not a picture " * 100)
    for upload, error, message in ((bomb, ArchiveError, "bomb.zip looks like a zip bomb"),
                                   (fake, ValueError, "photo.png is not an image we can read")):
        with pytest.raises(error, match=message):
            run_train_style(_style_image(tmp_path), [str(upload)], name="refused", store=store, steps=2,
                            image_size=32, vgg_weights="random", checkpoint_dir=tmp_path / "ckpt")
        training = settings.outputs_dir() / "training" / "refused"
        assert not training.exists() or not any(path.is_file() for path in training.rglob("*")), \
            sorted(training.rglob("*"))
    assert [record.status for record in store.list()] == ["failed", "failed"]
