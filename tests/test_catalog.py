"""The catalog of real models (core.catalog): entries, dropdown defaults, downloads (disk check, once per repo,
progress) and the multi-user source gate (loader.check_source). The Hub is mocked throughout: nothing downloads."""

from __future__ import annotations

import fnmatch
import re
import shutil
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

from pipelines.core import catalog, downloads, loader, network, owners
from pipelines.core.errors import UserError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")
ROLES = {"sd15", "controlnet", "ip_adapter", "lcm_lora", "blip", "clip", "dino", "inception", "lpips"}


# ---------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def fake_hub_cache(monkeypatch):
    """A Hugging Face cache holding exactly the (repo, file) pairs in the returned set."""
    present: set[tuple[str, str]] = set()

    def try_to_load_from_cache(repo, filename, *args, **kwargs):
        return f"/cache/{repo}/{filename}" if (repo, filename) in present else None

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", try_to_load_from_cache)
    return present


def cache_entry(present: set, entry: catalog.CatalogEntry) -> None:
    present.update((entry.repo, name) for name in entry.required_files)


@pytest.fixture
def hub_state(monkeypatch):
    """Set what network.py knows without a network call: 'offline', 'online' or 'unknown'."""

    def set_state(state: str) -> None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        network.forget_probes()
        if state == "offline":
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        elif state == "online":
            network._PROBED[network._hub_address()] = network.HubStatus(False, "reachable (test)")

    yield set_state
    network.forget_probes()


@pytest.fixture
def empty_models_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------------------------------------- entries
def test_every_role_the_issue_names_has_an_entry_and_entries_are_well_formed():
    assert {entry.role for entry in catalog.entries()} >= ROLES
    for entry in catalog.entries():
        assert entry.label and entry.licence and entry.verified, entry
        assert entry.size_bytes > 1_000_000, entry  # real networks: at least megabytes
        if entry.repo:
            assert HUB_ID.fullmatch(entry.repo), entry.repo
            assert entry.source in (entry.repo, f"{entry.repo}/{entry.subfolder}"), entry
            assert entry.required_files, entry
            # weights from the Hub only as safetensors: nothing downloaded here is ever unpickled
            weights = [name for name in entry.files if not name.endswith((".json", ".txt", "/*"))]
            assert weights and all(name.endswith(".safetensors") for name in weights), entry
            if entry.subfolder:
                assert all(name.startswith(entry.subfolder + "/") for name in entry.files), entry
            if entry.variant:
                assert all(f".{entry.variant}." in name for name in weights), entry
        else:
            assert entry.url.startswith("https://"), entry


def test_sd15_pipeline_entries_name_what_diffusers_reads():
    for entry in catalog.entries("sd15"):
        for component in ("unet", "vae", "text_encoder"):
            assert any(fnmatch.fnmatch(f"{component}/config.json", pattern) for pattern in entry.files)
        assert "model_index.json" in entry.files
        assert entry.size_bytes > 4 * catalog.GB  # an fp32 SD 1.5 UNet alone is 3.44 GB


def test_the_tabs_controlnets_and_adapters_are_all_in_the_catalog():
    from pipelines.landmark_faces.runs import CONTROLNET_DEFAULT, CONTROLNET_MEDIAPIPE, IP_ADAPTER_DEFAULT
    from pipelines.storyboard.request import CONTROL_TYPES

    for source in [*CONTROL_TYPES.values(), CONTROLNET_DEFAULT, CONTROLNET_MEDIAPIPE]:
        assert catalog.entry_for(source).role == "controlnet", source
    assert catalog.entry_for(IP_ADAPTER_DEFAULT).role == "ip_adapter"
    # the loader sees the MediaPipe ControlNet as repo + sub-folder; the IP-Adapter's encoder as a sub-folder
    assert catalog.entry_for("CrucibleAI/ControlNetMediaPipeFace", "diffusion_sd15").source == CONTROLNET_MEDIAPIPE
    assert catalog.entry_for("CrucibleAI/ControlNetMediaPipeFace", "other") is None
    assert catalog.entry_for(IP_ADAPTER_DEFAULT, "models/image_encoder") is not None


def test_the_mediapipe_controlnet_is_loaded_as_its_fp16_variant(monkeypatch):
    from pipelines.diffusion import models

    seen = {}
    monkeypatch.setattr(models, "load_model", lambda family, source, **options: seen.update(options, src=source))
    models.load_controlnet("CrucibleAI/ControlNetMediaPipeFace/diffusion_sd15")
    assert seen["src"] == "CrucibleAI/ControlNetMediaPipeFace"
    assert seen["subfolder"] == "diffusion_sd15" and seen["variant"] == "fp16"


def test_size_text_is_decimal_like_the_hub():
    assert catalog.size_text(5_490_000_000) == "≈ 5.5 GB"
    assert catalog.size_text(98_200_000) == "≈ 98 MB"


# ---------------------------------------------------------------------------------------------- dropdowns
def test_dropdowns_list_catalog_models_with_licence_and_size(fake_hub_cache, hub_state, empty_models_folder):
    from pipelines.diffusion.models import model_choices

    hub_state("offline")
    labels = dict((source, label) for label, source in model_choices())
    for entry in catalog.entries("sd15"):
        assert entry.licence in labels[entry.source] and "5.5 GB" in labels[entry.source]
        # offline, a model that is not here cannot be had: the label must not promise a download
        assert "cannot be downloaded offline" in labels[entry.source] and "first use" not in labels[entry.source]
    assert "output is noise" in labels["tiny:sd15"]
    hub_state("online")
    labels = dict((source, label) for label, source in model_choices())
    assert all("download on first use" in labels[entry.source] for entry in catalog.entries("sd15"))


def test_default_is_a_cached_real_model_even_offline(fake_hub_cache, hub_state, empty_models_folder):
    from pipelines.diffusion.models import default_model, model_choices

    hub_state("offline")
    second = catalog.entries("sd15")[1]
    cache_entry(fake_hub_cache, second)
    assert default_model() == second.source
    assert "downloaded" in dict((s, label) for label, s in model_choices())[second.source]


def test_default_is_the_tiny_model_only_offline_with_nothing_cached(fake_hub_cache, hub_state, empty_models_folder):
    from pipelines.diffusion.models import default_model

    hub_state("offline")
    assert default_model() == "tiny:sd15"
    hub_state("online")
    assert default_model() == catalog.entries("sd15")[0].source
    hub_state("unknown")  # never probed at start-up: a real model (it downloads on first use)
    assert default_model() == catalog.entries("sd15")[0].source


def test_a_checkpoint_in_the_models_folder_is_the_default(fake_hub_cache, hub_state, empty_models_folder):
    from pipelines.diffusion.models import default_model

    hub_state("offline")
    (empty_models_folder / "models").mkdir()
    (empty_models_folder / "models" / "mine.safetensors").write_bytes(b"x")
    assert default_model() == str(Path("models") / "mine.safetensors")


def test_real_controlnet_and_adapter_go_with_a_real_checkpoint(fake_hub_cache, hub_state, empty_models_folder):
    from tabs.landmark_faces import _sd_defaults

    hub_state("online")
    model, control, adapter = _sd_defaults()
    assert not model.startswith("tiny:") and catalog.entry_for(control) and catalog.entry_for(adapter)
    hub_state("offline")
    assert _sd_defaults() == ("tiny:sd15", "tiny:controlnet", "tiny:ip_adapter")


def test_metric_network_defaults_follow_the_same_rule(fake_hub_cache, hub_state, monkeypatch):
    from pipelines.metrics import features

    hub_state("offline")
    monkeypatch.setattr(features, "is_downloaded", lambda kind, source: loader.is_test_model(source))
    assert features.default_network("clip") == "tiny:clip"
    hub_state("online")
    assert features.default_network("clip") == "openai/clip-vit-base-patch32"
    label = dict((s, label) for label, s in features.network_choices("dino"))["facebook/dinov2-small"]
    assert "Apache-2.0" in label and "88 MB" in label


# ---------------------------------------------------------------------------------------------- downloads
FakeUsage = namedtuple("FakeUsage", "total used free")


def _small_entry(size: int = 10 * catalog.MB) -> catalog.CatalogEntry:
    return catalog.CatalogEntry("clip", "test-org/test-model", "Test model", "MIT", size,
                                ("config.json", "model.safetensors"), repo="test-org/test-model", verified="test")


def test_a_download_the_disk_cannot_hold_is_refused_before_it_starts(fake_hub_cache, monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(downloads, "hub_cache_dir", lambda: tmp_path / "not" / "yet")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: FakeUsage(10**12, 0, 5 * catalog.MB))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("downloaded anyway"))
    with pytest.raises(UserError, match="Not enough free disk space.*Test model.*11 MB.*5 MB"):
        downloads.fetch_entry(_small_entry())


def test_two_visitors_asking_at_once_download_once(fake_hub_cache, monkeypatch, tmp_path):
    import huggingface_hub

    entry = _small_entry()
    monkeypatch.setattr(downloads, "hub_cache_dir", lambda: tmp_path)
    calls = []

    def slow_snapshot_download(repo, **kwargs):
        calls.append(repo)
        time.sleep(0.2)  # long enough for the other visitor to arrive while it runs
        cache_entry(fake_hub_cache, entry)
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", slow_snapshot_download)
    visitors = [threading.Thread(target=downloads.fetch_entry, args=(entry,)) for _ in range(4)]
    for visitor in visitors:
        visitor.start()
    for visitor in visitors:
        visitor.join()
    assert calls == [entry.repo]


def test_download_progress_reaches_the_jobs_bar(fake_hub_cache, monkeypatch, tmp_path):
    import huggingface_hub

    entry = _small_entry(3 * catalog.MB)
    monkeypatch.setattr(downloads, "hub_cache_dir", lambda: tmp_path)
    seen = []

    def fake_snapshot_download(repo, *, allow_patterns, tqdm_class):
        assert allow_patterns == list(entry.files)
        files = tqdm_class(total=2, unit="it", desc="Fetching 2 files")  # file count: not a byte figure
        bytes_bar = tqdm_class(total=3 * catalog.MB, unit="B", desc="Reconstructing",
                               name="huggingface_hub.snapshot_download")
        for _ in range(3):
            bytes_bar.update(catalog.MB)
        files.update(2)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    downloads.report_downloads_to(lambda done, total, message: seen.append((done, total, message)))
    try:
        downloads.fetch_entry(entry)
    finally:
        downloads.report_downloads_to(None)
    # in MB: the page shows "done/total" as sizes
    assert [(done, total) for done, total, _ in seen] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert all("Test model" in message for _, _, message in seen) and "2 of 3 MB" in seen[2][2]


def test_the_loader_downloads_a_missing_catalog_model_first(fake_hub_cache, hub_state, monkeypatch):
    hub_state("online")
    fetched = []
    monkeypatch.setattr(downloads, "fetch_entry", lambda entry: fetched.append(entry.source))
    monkeypatch.setitem(loader.FAMILIES, "fake", lambda request: object())
    loader.load_model("fake", "openai/clip-vit-base-patch32", device="cpu")
    loader.load_model("fake", "some-org/not-in-catalog", device="cpu")
    assert fetched == ["openai/clip-vit-base-patch32"]
    loader.CACHE.discard(lambda key: key[0] == "fake")


# ---------------------------------------------------------------------------------------------- sources
@pytest.fixture
def multi_user(monkeypatch, tmp_path):
    monkeypatch.setenv("ASL_MULTI_USER", "1")
    monkeypatch.delenv("ASL_ALLOW_HUB_IDS", raising=False)
    monkeypatch.setenv("ASL_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with owners.acting_as(owners.Owner("browser", "visitor-a")):
        yield tmp_path


def test_multi_user_refuses_server_paths_as_a_controlnet_before_loading(multi_user, monkeypatch):
    from pipelines.diffusion import models

    monkeypatch.setattr(loader, "FAMILIES", {})  # any load attempt would fail differently
    for source in ("/etc", "/etc/passwd", "../outside.safetensors", "models/../../x.safetensors"):
        with pytest.raises(loader.SourceRefused, match="not a model this server offers"):
            models.load_controlnet(source)
    with pytest.raises(loader.SourceRefused):
        models.load_pipeline("/etc")


def test_multi_user_accepts_catalog_models_tiny_models_and_models_folder_files(multi_user):
    (multi_user / "models" / "mine.safetensors").write_bytes(b"x")
    (multi_user / "models" / "folder").mkdir()
    for source in ("lllyasviel/control_v11p_sd15_openpose", "CrucibleAI/ControlNetMediaPipeFace/diffusion_sd15",
                   "tiny:controlnet", "models/mine.safetensors", "mine.safetensors", "folder",
                   str(multi_user / "models" / "mine.safetensors")):
        loader.check_source(source)
    loader.check_source("CrucibleAI/ControlNetMediaPipeFace", "diffusion_sd15")
    loader.check_source("h94/IP-Adapter", "models/image_encoder")


def test_multi_user_hub_ids_only_where_the_host_allows_downloads(multi_user, monkeypatch):
    with pytest.raises(loader.SourceRefused, match="models folder\\.$"):
        loader.check_source("someone/any-model")
    with pytest.raises(loader.SourceRefused):  # a catalog repo's other sub-folder is not the catalog model
        loader.check_source("CrucibleAI/ControlNetMediaPipeFace", "elsewhere")
    monkeypatch.setenv("ASL_ALLOW_HUB_IDS", "1")
    loader.check_source("someone/any-model")
    with pytest.raises(loader.SourceRefused, match="model id"):  # still no server paths
        loader.check_source("/etc")


def test_multi_user_a_visitor_loads_their_own_outputs_but_not_anothers(multi_user):
    from pipelines.core import settings

    mine = settings.outputs_dir() / "landmark_faces" / "models" / "mine.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"x")
    loader.check_source(str(mine))
    with owners.acting_as(owners.Owner("browser", "visitor-b")), pytest.raises(loader.SourceRefused):
        loader.check_source(str(mine))


def test_single_user_mode_keeps_accepting_paths_and_hub_ids(monkeypatch, tmp_path):
    monkeypatch.setenv("ASL_MULTI_USER", "0")
    monkeypatch.delenv("ASL_ALLOW_HUB_IDS", raising=False)
    for source in ("/etc", str(tmp_path), "someone/any-model", "org/repo/sub"):
        loader.check_source(source)
    assert loader.hub_ids_allowed()


def test_multi_user_landmark_tab_refuses_a_server_path_as_controlnet(multi_user):
    """Through the tab's handler, as an API client would send it: a plain message on the page, nothing read."""
    import gradio as gr

    from pipelines.landmark_faces import landmarks as L
    from tabs import landmark_faces as tab

    with pytest.raises(gr.Error, match="'/etc' is not a model this server offers"):
        tab.on_generate_controlnet(L.parametric_face().tolist(), "tiny:sd15", "/etc", "1girl", "", 1, 7, 1, 0, 64,
                                   None, "tiny:ip_adapter", 0.6, progress=lambda *a, **k: None)
