"""A public Space where each visitor's work stays theirs (issue #18): owners in the core, per-owner outputs,
fair-use limits, sharing, and a launched multi-user app driven by two visitors (API clients and browsers)."""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from pipelines.core import owners, quotas, records, settings, sharing
from pipelines.core.errors import UserError
from tests.support.server import running_app

ALICE, BOB = owners.Owner("browser", "a" * 32), owners.Owner("browser", "b" * 32)


# ------------------------------------------------------------------------------------------------ the core
def test_single_user_mode_is_unchanged(monkeypatch, tmp_path):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv(owners.ENV_MULTI_USER, raising=False)
    assert not owners.multi_user()
    assert settings.outputs_dir() == settings.outputs_root() == Path(os.environ["ASL_OUTPUTS"])
    with owners.acting_as(ALICE):  # a visitor changes nothing in single-user mode
        assert settings.outputs_dir() == settings.outputs_root()
        assert owners.visible("browser-someone-else")


def test_mode_follows_the_space_and_the_flag(monkeypatch):
    monkeypatch.delenv(owners.ENV_MULTI_USER, raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/anime-style-lab")
    assert owners.multi_user()
    monkeypatch.setenv(owners.ENV_MULTI_USER, "0")
    assert not owners.multi_user()
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv(owners.ENV_MULTI_USER, "1")
    assert owners.multi_user()


def test_multi_user_outputs_are_per_owner_and_need_an_owner(monkeypatch):
    monkeypatch.setenv(owners.ENV_MULTI_USER, "1")
    with pytest.raises(owners.NoOwner):
        settings.outputs_dir()
    with owners.acting_as(ALICE):
        alice = settings.outputs_dir()
    with owners.acting_as(BOB):
        bob = settings.outputs_dir()
    assert alice != bob and alice.parent == bob.parent == settings.outputs_root() / settings.VISITORS
    # keys are file-safe and differ between kinds with the same text
    assert owners.Owner("login", "../x").key != owners.Owner("browser", "../x").key
    assert "/" not in owners.Owner("login", "../../etc").key


def test_runs_are_stamped_and_listed_per_owner(monkeypatch):
    monkeypatch.setenv(owners.ENV_MULTI_USER, "1")
    with owners.acting_as(ALICE):
        store = records.default_store()
        store.save(records.RunRecord(tab="Neural style", params={"style": "x"}))
        assert [record.owner for record in store.list()] == [ALICE.key]
    with owners.acting_as(BOB):
        assert records.default_store().list() == []


def test_an_old_runs_database_gains_the_owner_column(tmp_path):
    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as db:  # the schema before owners existed
        db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, created REAL NOT NULL, tab TEXT NOT NULL, status TEXT "
                   "NOT NULL, params TEXT NOT NULL, seed INTEGER, models TEXT NOT NULL, device TEXT, attention TEXT, "
                   "timings TEXT NOT NULL, outputs TEXT NOT NULL, error TEXT)")
        db.execute("INSERT INTO runs VALUES ('old', 1, 'History', 'done', '{}', NULL, '[]', NULL, NULL, '{}', '[]', "
                   "NULL)")
    store = records.RunStore(path)
    assert store.get("old").owner == "local"


def test_a_damaged_runs_database_is_set_aside_and_a_fresh_one_started(tmp_path):
    path = tmp_path / "runs.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    store = records.RunStore(path)
    store.save(records.RunRecord(tab="Neural style", params={}))
    assert len(store.list()) == 1
    aside = list(tmp_path.glob("runs.sqlite.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"this is not a database" * 100  # nothing lost
    assert any("runs.sqlite was damaged" in note for note in records.SET_ASIDE)


def test_storage_limit_refuses_new_work_with_a_plain_message(monkeypatch):
    monkeypatch.setenv(owners.ENV_MULTI_USER, "1")
    monkeypatch.setenv("ASL_VISITOR_STORAGE_MB", "1")
    with owners.acting_as(ALICE):
        quotas.check_storage()  # empty: fine
        (settings.outputs_dir() / "big.bin").write_bytes(b"\0" * (2**20 + 1))
        with pytest.raises(UserError, match="each visitor may keep 1 MB.*Delete some runs in History"):
            quotas.check_storage()
    with owners.acting_as(BOB):
        quotas.check_storage()  # another visitor is not affected
    monkeypatch.setenv(owners.ENV_MULTI_USER, "0")
    quotas.check_storage()  # no limits on a single-user app


def test_queue_limit_message(monkeypatch):
    monkeypatch.setenv(owners.ENV_MULTI_USER, "1")
    monkeypatch.setenv("ASL_VISITOR_QUEUED_JOBS", "2")
    assert quotas.queue_refusal(1) is None
    assert "2 jobs waiting or running" in quotas.queue_refusal(2)


def test_anonymous_work_expires_and_logged_in_work_stays(monkeypatch):
    monkeypatch.setenv(owners.ENV_MULTI_USER, "1")
    monkeypatch.setenv("ASL_ANONYMOUS_DAYS", "7")
    login = owners.Owner("login", "carol")
    folders = {}
    for owner in (ALICE, BOB, login):
        with owners.acting_as(owner):
            folders[owner] = settings.outputs_dir()
            (folders[owner] / "inputs").mkdir()
            (folders[owner] / "inputs" / "x.png").write_bytes(b"x")
    old = time.time() - 8 * 86400
    for owner in (ALICE, login):
        for path in [folders[owner], *folders[owner].rglob("*")]:
            os.utime(path, (old, old))
    assert quotas.expire_anonymous() == [ALICE.key]
    assert not folders[ALICE].exists() and folders[BOB].exists() and folders[login].exists()


def test_sharing_is_explicit_and_only_the_owner_takes_it_back(monkeypatch):
    monkeypatch.setenv(owners.ENV_MULTI_USER, "1")
    with owners.acting_as(ALICE):
        store = records.default_store()
        image = settings.outputs_dir() / "neural_style" / "r_00.png"
        image.parent.mkdir(parents=True)
        Image.new("RGB", (8, 8), "red").save(image)
        record = store.save(records.RunRecord(tab="Neural style", params={"style": "x"}, outputs=[str(image)]))
        token = sharing.share_run(record.id)
    with owners.acting_as(BOB):
        with pytest.raises(UserError, match="No run of yours"):
            sharing.share_run(record.id)  # Bob cannot publish Alice's run
        shared = sharing.open_shared(token)
        assert shared.record["params"] == {"style": "x"} and "owner" not in shared.record
        assert Image.open(shared.images[0]).getpixel((0, 0)) == (255, 0, 0)
        with pytest.raises(UserError, match="Only the visitor who shared"):
            sharing.unshare(token)
        with pytest.raises(UserError, match="not a share link"):
            sharing.open_shared("../../visitors")
    with owners.acting_as(ALICE):
        sharing.unshare(token)
        with pytest.raises(UserError, match="No shared run"):
            sharing.open_shared(token)


def test_a_request_is_owned_by_its_login_else_its_browser_key_else_its_session():
    from types import SimpleNamespace

    from tabs.visitors import SessionKeys, owner_of

    keys = SessionKeys()
    keys.remember("page-1", "k" * 32)
    oauth = SimpleNamespace(username=None, session_hash="page-1",
                            session={"oauth_info": {"userinfo": {"preferred_username": "dana"}}})
    assert owner_of(oauth, keys) == owners.Owner("login", "dana", display="dana")
    assert owner_of(SimpleNamespace(username="erin", session_hash="page-1"), keys).ident == "erin"  # basic auth
    assert owner_of(SimpleNamespace(username=None, session_hash="page-1"), keys) == owners.Owner("browser", "k" * 32)
    assert owner_of(SimpleNamespace(username=None, session_hash="api-2"), keys) == owners.Owner("session", "api-2")
    assert owner_of(None, keys) is None


# ------------------------------------------------------------------------------------- a launched server
def _red_png(folder: Path) -> Path:
    path = folder / "red.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    return path


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def multi_user_server(tmp_path_factory, shared_cache_dir):
    folder = tmp_path_factory.mktemp("multi")
    with running_app(folder / "outputs", shared_cache_dir,
                     env={"HF_HUB_OFFLINE": "1", "ASL_MULTI_USER": "1", "ASL_VISITOR_QUEUED_JOBS": "1"}) as url:
        yield url, folder / "outputs"


@pytest.mark.slow
def test_two_visitors_see_only_their_own_work_and_no_outputs_url_is_served(multi_user_server, tmp_path):
    url, outputs = multi_user_server
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    gallery, readout = alice.predict([handle_file(str(_red_png(tmp_path)))], "tiny:style", 1.0, False, 64,
                                     api_name="/stylize")
    run_id = readout.split("run `")[1].split("`")[0]
    assert [row[-1] for row in alice.predict("All tabs", api_name="/history_list")[1]["data"]] == [run_id]
    assert bob.predict("All tabs", api_name="/history_list")[1]["data"] == []
    with pytest.raises(Exception, match="No run with id"):
        bob.predict(run_id, api_name="/history_show")
    with pytest.raises(Exception, match="No run with id"):
        bob.predict(run_id, api_name="/history_rerun")

    # What the endpoint handed Alice is served (from Gradio's cache); nothing under outputs is, by any spelling.
    handed = gallery[0]["image"]
    assert not Path(handed).resolve().is_relative_to(outputs.resolve())
    stored = sorted(path for path in outputs.rglob("*") if path.is_file())
    assert any(path.name == "runs.sqlite" for path in stored) and any(path.suffix == ".png" for path in stored)
    for path in stored:
        for spelling in (str(path), os.path.relpath(path, Path(__file__).parents[1]), f"{outputs}/../{outputs.name}/"
                         f"{path.relative_to(outputs)}"):
            for route in ("gradio_api/file=", "file="):
                assert _status(f"{url}{route}{spelling}") in (403, 404), (route, spelling)

    # Sharing is the explicit act that lets Bob see it.
    note = alice.predict(run_id, api_name="/history_share")
    code = note.rsplit("`", 2)[-2]
    images, details = bob.predict(code, api_name="/history_open_shared")
    assert len(images) == 1 and details["id"] == run_id
    assert bob.predict("All tabs", api_name="/history_list")[1]["data"] == []  # still not in Bob's History

    # Alice deletes her run: record and images go.
    alice.predict(run_id, "All tabs", api_name="/history_delete")
    assert alice.predict("All tabs", api_name="/history_list")[1]["data"] == []


@pytest.mark.slow
def test_a_visitors_model_is_theirs(multi_user_server, tmp_path):
    from pipelines.neural_style.network import save_tiny_style

    url, _ = multi_user_server
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    save_tiny_style(tmp_path / "style")
    upload = tmp_path / "alices_style.safetensors"
    (tmp_path / "style" / "model.safetensors").rename(upload)
    alice.predict(handle_file(str(upload)), "alices_style", api_name="/add_style")
    image = handle_file(str(_red_png(tmp_path)))
    assert alice.predict([image], "alices_style", 1.0, False, 64, api_name="/stylize")[0]
    with pytest.raises(Exception, match="[Uu]nknown style"):
        bob.predict([image], "alices_style", 1.0, False, 64, api_name="/stylize")


@pytest.mark.slow
def test_one_visitor_cannot_fill_the_queue(multi_user_server, tmp_path):
    url, _ = multi_user_server
    greedy, other = Client(url, verbose=False), Client(url, verbose=False)
    image = handle_file(str(_red_png(tmp_path)))
    # ASL_VISITOR_QUEUED_JOBS=1: the greedy visitor's second job is refused while the first waits or runs
    jobs = [greedy.submit([image], "tiny:style", 1.0, False, 256, api_name="/stylize") for _ in range(3)]
    outcomes = []
    for job in jobs:
        try:
            job.result(timeout=120)
            outcomes.append("done")
        except Exception as err:  # noqa: BLE001 - the refusal's text (what the page shows) is what we check
            response = getattr(err, "response", None)
            outcomes.append(response.json().get("detail", "") if response is not None else str(err))
    assert outcomes.count("done") >= 1
    assert any("most one visitor may have at once" in outcome for outcome in outcomes), outcomes
    # another visitor is served meanwhile
    assert other.predict([image], "tiny:style", 1.0, False, 64, api_name="/stylize")[0]


@pytest.mark.slow
@pytest.mark.browser
def test_two_browsers_keep_their_own_history_across_reloads(multi_user_server, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS

    url, outputs = multi_user_server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            first, second = browser.new_context(), browser.new_context()  # two browsers: two localStorages
            for context in (first, second):
                page = context.new_page()
                page.goto(url)
                page.get_by_role("tab", name="History").click()
                page.wait_for_timeout(1500)
            visitors_before = {path.name for path in (outputs / settings.VISITORS).iterdir()}
            browser_folders = [name for name in visitors_before if name.startswith("browser-")]
            assert len(browser_folders) == 2, visitors_before  # one owner per browser, none shared

            # a reload of the same browser is the same visitor (its key is kept in localStorage)
            page = first.pages[0]
            page.reload()
            page.get_by_role("tab", name="History").click()
            page.wait_for_timeout(1500)
            after = {path.name for path in (outputs / settings.VISITORS).iterdir() if path.name.startswith("browser-")}
            assert after == set(browser_folders)
        finally:
            browser.close()


def test_a_damaged_judging_database_is_set_aside_too(tmp_path):
    from pipelines.metrics.judging import JudgingStore

    path = tmp_path / "judging.sqlite"
    path.write_bytes(b"garbage" * 500)
    store = JudgingStore(path)
    assert store.path == path and list(tmp_path.glob("judging.sqlite.damaged-*"))


def test_a_judging_study_is_listed_for_its_owner_only_and_opened_by_link(monkeypatch):
    import numpy as np

    from pipelines.metrics.imagesets import ImageSet
    from pipelines.metrics.judging import JudgingStore

    monkeypatch.setenv(owners.ENV_MULTI_USER, "1")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(4)]
    a, b = ImageSet("a", images[:2], ["x", "y"]), ImageSet("b", images[2:], ["x", "y"])
    with owners.acting_as(ALICE):
        study = JudgingStore().create_study(a, b, pairing="name", seed=0)
        assert [s.id for s in JudgingStore().studies()] == [study.id]
    with owners.acting_as(BOB):
        assert JudgingStore().studies() == []  # not in Bob's list …
        assert not JudgingStore().may_see_results(study.id)  # … and not his results
        JudgingStore().start_session(study.id, judge="bob")  # but Bob can judge it by its link
