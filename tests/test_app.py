"""The app shell: lazy imports, settings, endpoints named, no outside connection at start-up."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

import app
from tests.support.server import ROOT, running_app


def _run_python(code: str, tmp_path) -> str:
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "ASL_OUTPUTS": str(tmp_path / "out"),
           "ASL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_building_the_app_imports_no_model_library(tmp_path):
    """The page must be served quickly: torch, diffusers and transformers load on first model use."""
    code = ("import sys, app; app.build_app(); "
            "print([m for m in ('torch', 'diffusers', 'transformers', 'open_clip') if m in sys.modules])")
    assert _run_python(code, tmp_path) == "[]"


def test_every_event_that_does_model_work_has_an_api_name(tmp_path):
    code = ("import json, app; demo = app.build_app(); "
            "print(json.dumps(sorted(f.api_name for f in demo.fns.values() if f.api_visibility == 'public')))")
    names = json.loads(_run_python(code, tmp_path))
    expected = {"stylize", "stylize_frame", "add_style", "train_style", "cancel_training", "history_list",
                "history_show", "history_rerun"}
    assert expected <= set(names)


def test_flags_become_settings(monkeypatch, tmp_path):
    for name in ("ASL_OUTPUTS", "ASL_DEVICE", "ASL_DTYPE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    args = app.parse_args(["--outputs", str(tmp_path), "--device", "cpu", "--dtype", "fp32", "--offline",
                           "--port", "7999"])
    app.apply_settings(args)
    import os

    assert (os.environ["ASL_OUTPUTS"], os.environ["ASL_DEVICE"], os.environ["HF_HUB_OFFLINE"]) == \
        (str(tmp_path), "cpu", "1")
    assert args.port == 7999 and args.host == "127.0.0.1"


def test_auth_from_env_and_file(monkeypatch, tmp_path):
    monkeypatch.setenv("ASL_AUTH", "ann:secret1, bob:pw:with:colons")
    assert app.read_auth(None) == [("ann", "secret1"), ("bob", "pw:with:colons")]
    monkeypatch.delenv("ASL_AUTH")
    assert app.read_auth(None) is None
    path = tmp_path / "auth.txt"
    path.write_text("cy:pass\n\n")
    assert app.read_auth(str(path)) == [("cy", "pass")]
    path.write_text("no-colon-here\n")
    with pytest.raises(SystemExit, match="user:password"):
        app.read_auth(str(path))


@pytest.mark.slow
def test_app_starts_and_serves_with_no_outside_connection(tmp_path):
    """Start-up and page loads open no connection beyond loopback, even without HF_HUB_OFFLINE set.

    The app runs under a guard that records every non-loopback connect() or DNS lookup.
    """
    log = tmp_path / "outside.log"
    drop = ("HF_HUB_OFFLINE", "GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY")
    with running_app(tmp_path / "out", tmp_path / "cache", prefix=["tests/support/netguard.py", str(log)],
                     drop_env=drop) as url:
        for path in ("", "config", "gradio_api/info"):
            with urllib.request.urlopen(url + path, timeout=30) as response:
                assert response.status == 200
        time.sleep(3)  # give any background check (analytics, version) time to happen
    assert not log.exists() or log.read_text() == "", log.read_text()


def _page_config(html: str) -> dict:
    """The app config the page embeds (window.gradio_config = {...};)."""
    start = html.index("window.gradio_config = ") + len("window.gradio_config = ")
    config, _ = json.JSONDecoder().raw_decode(html[start:])
    return config


@pytest.mark.slow
def test_basic_auth_refuses_the_page_and_the_api_without_the_password(tmp_path):
    import httpx
    from gradio_client import Client

    with running_app(tmp_path / "out", tmp_path / "cache", env={"ASL_AUTH": "ann:secret1,bob:pw:with:colons"}) \
            as url:
        anonymous = httpx.Client(timeout=30)
        page = _page_config(anonymous.get(url).text)
        assert page["auth_required"] and page["components"] == []  # the login form only, no app
        for path in ("config", "gradio_api/info"):
            assert anonymous.get(url + path).status_code == 401, path
        assert anonymous.post(url + "gradio_api/upload", files={"files": ("a.png", b"x")}).status_code == 401
        joined = anonymous.post(url + "gradio_api/queue/join", json={"data": ["All tabs"], "fn_index": 0,
                                                                      "session_hash": "anonymous"})
        assert joined.status_code == 401
        assert anonymous.post(url + "login", data={"username": "ann", "password": "wrong"}).status_code == 400
        with pytest.raises(Exception, match="credentials"):
            Client(url, verbose=False)
        with pytest.raises(Exception):  # noqa: B017 - gradio_client's error type for a refused login varies
            Client(url, auth=("ann", "not-the-password"), verbose=False)

        member = httpx.Client(timeout=30)
        assert member.post(url + "login", data={"username": "bob", "password": "pw:with:colons"}).status_code == 200
        page = _page_config(member.get(url).text)
        assert not page.get("auth_required") and "Neural style" in json.dumps(page["components"])
        assert member.get(url + "config").status_code == 200
        client = Client(url, auth=("ann", "secret1"), verbose=False)
        gallery, table = client.predict("All tabs", api_name="/history_list")
        assert table["headers"][-1] == "Run id" and "What it was" in table["headers"]
