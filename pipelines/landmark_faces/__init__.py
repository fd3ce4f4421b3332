"""Landmark faces: 24 anime facial landmarks + tags → a face that follows them (seed document 003).

Two ways to draw a face from landmarks:
- the seed's own model, a pixel-space landmark-conditioned U-Net (unet.py), trained here on synthetic cartoon
  faces (synthetic.py) with the project's own command and shipped in assets/landmark_faces/;
- Stable Diffusion 1.5 + an OpenPose-face ControlNet through the diffusion core, with the landmarks drawn as
  OpenPose's 70 face points (or a photo's MediaPipe mesh for the MediaPipe-face ControlNet), optionally with a
  reference face through IP-Adapter.
`compare.compare_on_face` runs the seed's comparison: landmark-guided vs text-only vs reference-only (IP-Adapter).

    from pipelines.landmark_faces import FaceParams, parametric_face, load_unet, sample
    points = parametric_face(FaceParams(yaw=20, smile=0.8))        # or landmarks.from_photo / from_json
    faces = sample(load_unet(), points, ["blonde_hair", "blue_eyes", "smile"], guidance=2.0, seed=1, count=4)
    faces.images[0].save("face.png")

    python -m pipelines.landmark_faces train --steps 3000 --width 16 --image-size 32 --out model.safetensors
    python -m pipelines.landmark_faces generate --yaw 20 --tags "blonde_hair, smile" --out out/

Importing this package is cheap (no torch or numpy); they load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.loader import register_architecture
from pipelines.core.methods import MethodCard, Reference, lazy, lazy_exports
from pipelines.core.runs import register_rerunner
from pipelines.core.tiny_models import TinySpec, register_tiny

if TYPE_CHECKING:
    from .unet import LandmarkUNet

TAB = "Landmark faces"
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "landmark_faces"
SHIPPED_MODEL = ASSETS / "landmark_unet.safetensors"
SHIPPED_LABEL = "Paper 003's U-Net, trained on synthetic cartoon faces (shipped)"
TINY_UNET = "tiny:landmark_unet"
ARCHITECTURE = "landmark_unet"

METHOD_CARD = MethodCard(
    name="Landmark faces: 24 anime facial landmarks + tags → a face that follows them",
    tab=TAB,
    summary=(
        "Seed 003 draws anime faces from a 24-point landmark set (3 per brow, 5 per eye, nose, 4 mouth, face "
        "sides, chin) and a tag caption with a landmark-conditioned diffusion U-Net. Off-the-shelf face tools are "
        "trained on photos and mostly fail on anime faces, so here you set the landmarks yourself — with sliders "
        "(yaw, pitch, roll, eyes, gaze, mouth, smile, width), by editing the points, from a JSON file, or from a "
        "photo through MediaPipe — and draw a face either with the seed's own U-Net (trained in this project on "
        "synthetic cartoon faces, shipped with the app) or with Stable Diffusion 1.5 and an OpenPose-face (or, from a "
        "photo, MediaPipe-face) ControlNet, optionally steered by a reference face through IP-Adapter. Compare "
        "sets the landmark-guided face against text-only and reference-only ones, as the seed's Table 1 does."
    ),
    inputs="24 landmarks (sliders, table, JSON or a photo), tags, a guidance scale and a seed",
    model=(
        "the seed's pixel-space U-Net (DoubleConv → 3×Down with attention → bottleneck → 3×Up with attention; the "
        "landmark dot mask plus a learned tag embedding added in at every stage; classifier-free guidance), or "
        "SD 1.5 + ControlNet (OpenPose face or MediaPipe face) + optional IP-Adapter (plus-face) through the "
        "diffusion core"
    ),
    output="faces whose eyes, mouth and outline sit on the landmarks, PNGs with their settings",
    good_at=(
        "exact control of head turn, eye openness, gaze and mouth without drawing",
        "the shipped U-Net runs on a CPU in seconds at 64 px and follows the landmarks it is given, over the whole "
        "range of every slider (it was trained on it), with the hair in the frame; seeds change what the landmarks "
        "leave free (hair length, fringe, shade, blush, background)",
        "its per-slider read-back (eye openness, mouth opening, smile, gaze, roll, place) against the drawings, the "
        "same model given tags only and the untrained network is stored beside it and shown in Compare",
        "the same 24 points drive both models, and export/import as JSON",
    ),
    bad_at=(
        "the shipped U-Net only knows the synthetic cartoon faces it was trained on (flat colours, 64 px, under an "
        "hour of one CPU core): it is a demonstration of the method, not an anime illustrator; it predicts "
        "the clean image rather than the seed's noise target, because a noise-target model trained as long still "
        "drew noise",
        "roll is followed only roughly (about 7° off on average) and eye colour often comes out blue whatever the "
        "tag; face width is followed less closely than place (see the per-slider table in Compare)",
        "the text-only baseline is this same model given tags and an empty landmark map — an input it saw in "
        "training, where landmarks and tags are dropped independently (not a separate text-only model)",
        "the seed trained on 30,000 Danbooru faces with OpenCLIP captions (290 M parameters claimed); neither "
        "the data nor those weights are available here",
        "MediaPipe finds photo faces only; anime faces need hand-set landmarks",
        "the ControlNet path needs real SD 1.5, ControlNet and IP-Adapter weights; offline it runs on random-weight "
        "test models whose output is noise",
    ),
    references=(
        Reference("Ho, Jain, Abbeel: Denoising Diffusion Probabilistic Models (2020)",
                  "https://arxiv.org/abs/2006.11239"),
        Reference("Ho, Salimans: Classifier-Free Diffusion Guidance (2022)", "https://arxiv.org/abs/2207.12598"),
        Reference("dome272/Diffusion-Models-pytorch (the U-Net blocks the seed's figures follow)",
                  "https://github.com/dome272/Diffusion-Models-pytorch"),
        Reference("Zhang et al.: Adding Conditional Control to Text-to-Image Diffusion Models (ControlNet)",
                  "https://arxiv.org/abs/2302.05543"),
        Reference("Ye et al.: IP-Adapter (2023)", "https://arxiv.org/abs/2308.06721"),
        Reference("MediaPipe Face Mesh", "https://ai.google.dev/edge/mediapipe/solutions/vision/face_landmarker"),
    ),
    seed_document="003",
)

__all__ = ["METHOD_CARD", "SHIPPED_LABEL", "SHIPPED_MODEL", "TAB", "TINY_UNET", "FaceParams", "load_unet",
           "parametric_face", "sample"]

__getattr__ = lazy_exports(__name__, {
    "FaceParams": "landmarks", "parametric_face": "landmarks", "from_photo": "landmarks", "from_json": "landmarks",
    "to_json": "landmarks", "sample": "generate", "TrainConfig": "train", "train": "train",
    "run_generate": "runs", "run_controlnet": "runs", "compare_on_face": "compare",
})


def model_choices() -> list[tuple[str, str]]:
    """(label, source) for the tab's model dropdown: the shipped model first (when present), the models trained
    here (the Train tab, the CLI), then the tiny one."""
    from pipelines.core import settings

    choices = [(SHIPPED_LABEL, str(SHIPPED_MODEL))] if SHIPPED_MODEL.exists() else []
    trained = sorted((settings.outputs_dir() / "landmark_faces" / "models").glob("*.safetensors"))
    choices += [(f"Trained here: {path.stem}", str(path)) for path in trained]
    return [*choices, ("tiny (test, random weights: output is noise)", TINY_UNET)]


def default_model() -> str:
    return model_choices()[0][1]


def load_unet(source: str | None = None) -> LandmarkUNet:
    """The U-Net from the shipped file (default), "tiny:landmark_unet", or a .safetensors path (checked by content;
    whatever its metadata says, it is built as this architecture). Cached by the core loader."""
    from pipelines.core import loader

    source = str(source or default_model())
    options: dict[str, Any] = {}
    if not source.startswith("tiny:"):
        stat = Path(source).stat()
        options = {"config": {"architecture": ARCHITECTURE}, "version": f"{stat.st_mtime_ns}-{stat.st_size}"}
    return loader.load_model("torch_module", source, **options)


def is_test_model(source: str) -> bool:
    return str(source).startswith("tiny:")


def _rerun(params: dict[str, Any], store: Any) -> Any:
    from . import runs

    return runs.rerun(params, store)


# ---------------------------------------------------------------------------------------------- registrations
_UNET = f"{__name__}.unet"
register_architecture(ARCHITECTURE, lazy(_UNET, "build_landmark_unet"))
register_tiny(TinySpec("landmark_unet", "torch_module", "seed 003 landmark U-Net", 1, lazy(_UNET, "save_tiny_unet")))
register_rerunner(TAB, _rerun)


def unavailable_models() -> list[tuple[str, str]]:
    """For the app's status banner (no network call): the shipped U-Net missing from this install."""
    if SHIPPED_MODEL.exists():
        return []
    return [("Landmark faces U-Net", f"{SHIPPED_MODEL.name} is missing from assets/landmark_faces/")]
