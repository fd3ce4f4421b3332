"""Test environment: offline, no analytics, outputs and caches in temporary folders."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_folders(tmp_path, monkeypatch):
    """Each test writes outputs and records to its own folder; the model cache starts empty."""
    monkeypatch.setenv("ASL_OUTPUTS", str(tmp_path / "outputs"))
    yield
    import sys

    from pipelines.core import loader

    loader.CACHE.clear()
    if "pipelines.metrics.features" in sys.modules:  # features are cached per process, like models
        sys.modules["pipelines.metrics.features"].FEATURE_CACHE.clear()


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory):
    """Built tiny models are shared by the whole session (building them is the slow part)."""
    return tmp_path_factory.mktemp("asl-cache")


@pytest.fixture(autouse=True)
def tiny_model_cache(shared_cache_dir, monkeypatch):
    monkeypatch.setenv("ASL_CACHE", str(shared_cache_dir))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report carries the end of the log of every app that ran during it."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        from tests.support.server import log_tails

        tails = log_tails(since=call.start)
        if tails:
            report.sections.append(("app log", tails))
