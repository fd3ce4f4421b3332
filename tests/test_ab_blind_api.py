"""A judge's client cannot tell A from B before voting: driven through gradio_client against a launched app.

The owner makes a blind comparison of two sets whose images are the same pictures under different names (set B is
set A shifted by one), so the pixels cannot tell the sets apart either: anything that could must come from the
app. The judge's client then reads everything the app lets it read — the start and every vote's outputs, the
served images (their names, their PNG chunks), the results and close endpoints — and finds no set name, no file
name, no owner key, and no answer to "which side is A". Only after the owner closes the comparison does the judge
see the verdict, and still not the pairs map (which served image belongs to which set).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.support.server import running_app

pytestmark = pytest.mark.slow
SET_NAMES = ("Zanzibar-tuned", "Quokka-base")
STEMS = ("marmalade", "periwinkle")
PAIRS = 6


def _sets(folder: Path) -> dict[str, list[Path]]:
    pictures = []
    for index in range(PAIRS + 1):
        image = np.zeros((48, 48, 3), np.uint8)
        image[...] = (40 * index % 256, 90, 200 - 20 * index)
        image[10:30, 10:30] = 255 - image[0, 0]
        pictures.append(image)
    paths: dict[str, list[Path]] = {}
    for label, stem, shift in (("a", STEMS[0], 0), ("b", STEMS[1], 1)):
        (folder / label).mkdir(parents=True)
        paths[label] = []
        for index in range(PAIRS):
            path = folder / label / f"{stem}_{index:03d}.png"
            Image.fromarray(pictures[index + shift]).save(path)
            paths[label].append(path)
    return paths


def _text(outputs) -> str:
    return json.dumps(outputs, default=str)


def _served(outputs) -> list[Path]:
    """The image files among a view's outputs (the client has downloaded them)."""
    found = []
    for item in outputs:
        path = item.get("value", item) if isinstance(item, dict) else item
        if isinstance(path, str) and path.lower().endswith(".png") and Path(path).exists():
            found.append(Path(path))
    return found


def test_a_judges_client_cannot_tell_a_from_b_before_voting(tmp_path, shared_cache_dir):
    paths = _sets(tmp_path / "sets")
    with running_app(tmp_path / "outputs", shared_cache_dir, env={"HF_HUB_OFFLINE": "1"}) as url:
        owner, judge = Client(url, verbose=False), Client(url, verbose=False)
        files = lambda label: [handle_file(str(path)) for path in paths[label]]  # noqa: E731
        made = owner.predict(files("a"), [], "", SET_NAMES[0], files("b"), [], "", SET_NAMES[1], [], False, "",
                             "Which do you prefer?", "By order (1st with 1st …)", 0, api_name="/judge_create")
        message, study, owner_key = made[0], made[1], made[3]
        assert re.fullmatch(r"[0-9a-f]{12}", study) and owner_key and owner_key in message
        secrets = [*SET_NAMES, *STEMS, owner_key, "Zanzibar", "Quokka"]

        def assert_blind(outputs) -> None:
            text = _text(outputs).lower()
            leaked = [word for word in secrets if word.lower() in text]
            assert not leaked, f"the judge's client reads {leaked}"

        # Before voting: results and closing are the owner's.
        for call, args in (("/judge_results", (study, "", "")), ("/judge_close", (study, "")),
                           ("/judge_results", (study, "not-the-key", ""))):
            with pytest.raises(Exception, match="owner"):
                judge.predict(*args, api_name=call)

        view = judge.predict(study, "jo", api_name="/judge_start")
        seen_names: set[str] = set()
        answered = 0
        while True:
            assert_blind(view)
            images = _served(view)
            if not images:
                break
            assert len(images) == 2
            for image in images:
                assert re.fullmatch(r"[0-9a-f]{16}", image.stem), image.name  # a random name, nothing else
                with Image.open(image) as opened:
                    assert not {key for key in opened.info if key != "dpi"}  # no text chunk names a set
                seen_names.add(image.stem)
            session, position = view[0], view[8]  # the client drops the layout outputs (panel, row)
            view = judge.predict(session, position, api_name="/judge_left")
            answered += 1
            with pytest.raises(Exception, match="owner"):  # having voted changes nothing while voting is open
                judge.predict(study, "", "", api_name="/judge_results")
        assert answered == PAIRS
        assert "once the comparison's owner closes" in _text(view)  # no running verdict for a judge

        # The owner sees the running verdict and the pairs map; it names what the judge never saw.
        verdict, _table, _judges, _split, downloads = owner.predict(study, owner_key, "", api_name="/judge_results")
        assert "Running verdict" in verdict
        document = json.loads(Path(next(path for path in downloads if str(path).endswith(".json"))).read_text())
        owner_tokens = {pair[key] for pair in document["pairs"] for key in ("a_token", "b_token")}
        assert seen_names <= owner_tokens  # the served names are the map's keys: the map must stay the owner's
        names_a = {pair["a_name"] for pair in document["pairs"]}
        assert all(name.startswith(STEMS[0]) for name in names_a)

        # After closing: the judge sees the verdict, never the map, the votes file or the split pairs.
        owner.predict(study, owner_key, api_name="/judge_close")
        verdict, table, judges, split, downloads = judge.predict(study, "", "", api_name="/judge_results")
        assert "Final verdict" in verdict and not downloads
        assert not any(token in _text([verdict, table, judges, split]) for token in owner_tokens)
        with pytest.raises(Exception, match="closed"):
            judge.predict(study, "late", api_name="/judge_start")
