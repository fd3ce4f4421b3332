"""Blind A/B judging by eye: comparisons people judge, their judging sessions and every vote, kept on disk.

A *comparison* (here: a study) is two image sets turned into a fixed list of pairs. Its images are copied
under random names (`<outputs root>/judging/<id>/<token>.png`, re-encoded without metadata), so nothing a page
serves reveals a set or a file name.

Who sees what. A study belongs to its owner (`owners.current_owner().key`, stamped at creation) and to whoever
holds its owner key (a secret shown once when it is made: on a single-user server everyone is the same owner, so
the key is what tells the creator from a judge). The store lives under the outputs ROOT, not the owner's folder,
so a judge who is another visitor can open the study by its id. While voting is open, the results, the running
verdict, the pairs map (which served image belongs to which set, and its file name) and the exports are for the
owner only; after the owner closes the study, anyone with its id sees the verdict, and the pairs map stays the
owner's. Each judge is one identity (`owners.current_visitor()`: a login or a per-browser key; on a single
computer with no browser key, the typed name): a second session of the same identity is flagged, and only its
first answer to each pair is counted. Each person judging it opens a *session*: the same pairs in the session's
own random order, with A on the left or the right by a coin flip per pair. Votes are written one transaction
each to `outputs/judging/judging.sqlite` (so they survive a restart and a closed browser); a vote names the
position it answers, so a repeated key press never votes on a pair the judge has not seen, and sessions never
mix because every vote carries its session's id. The comparison is also a recorded run (History), whose CSV and
JSON hold every vote. The statistics are in `preference.py`.

    from pipelines.metrics.judging import JudgingStore, run_create_study
    record, study = run_create_study(["a.zip"], ["b.zip"], pairing="auto")
    store = default_judging_store()
    session = store.start_session(study.id, judge="Ann")
    view = store.view(session)                       # view.left_image, view.right_image, view.position
    view = store.vote(session, view.position, "left")
    print(store.result(study.id, owner_key=study.owner_key).verdict)   # the owner, while voting is open
    store.close(study.id, owner_key=study.owner_key)                   # then anyone with the id
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core import owners, settings
from pipelines.core.errors import UserError
from pipelines.core.jobs import atomic_write_bytes
from pipelines.core.records import RunRecord, RunStore, default_store, open_database

from . import TAB
from .preference import PreferenceResult, Vote, preference_result

QUESTIONS = ("Which do you prefer?", "Which looks more like the reference style?", "Which follows the prompt?")
ANSWERS = ("left", "right", "tie", "skip")
PAIRINGS = (None, "auto", "name", "order")  # None: random pairs; "auto": by file name when the names match
MAX_PAIRS = 1000
MAX_REFERENCE_SHOWN = 3
KIND = "judging"  # params["kind"] of a judging run in History

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY, created REAL NOT NULL, question TEXT NOT NULL, pairing TEXT, names TEXT NOT NULL,
    notes TEXT NOT NULL, pair_count INTEGER NOT NULL, seed INTEGER NOT NULL, digests TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '', owner_key_hash TEXT NOT NULL DEFAULT '', closed REAL
);
CREATE TABLE IF NOT EXISTS pairs (
    study TEXT NOT NULL, pair INTEGER NOT NULL, a_token TEXT NOT NULL, b_token TEXT NOT NULL,
    a_name TEXT NOT NULL, b_name TEXT NOT NULL, a_index INTEGER NOT NULL, b_index INTEGER NOT NULL,
    identical INTEGER NOT NULL, reference TEXT NOT NULL, prompt TEXT NOT NULL,
    PRIMARY KEY (study, pair)
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, study TEXT NOT NULL, judge TEXT NOT NULL, created REAL NOT NULL, seed INTEGER NOT NULL,
    schedule TEXT NOT NULL, shown_at REAL, identity TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS votes (
    session TEXT NOT NULL, position INTEGER NOT NULL, study TEXT NOT NULL, pair INTEGER NOT NULL,
    left_set TEXT NOT NULL, answer TEXT NOT NULL, choice TEXT NOT NULL, identical INTEGER NOT NULL,
    time REAL NOT NULL, seconds REAL,
    PRIMARY KEY (session, position)
);
CREATE INDEX IF NOT EXISTS votes_study ON votes (study);
CREATE INDEX IF NOT EXISTS sessions_study ON sessions (study);
"""
# Columns added after the first release: (table, column, declaration) added to an older file when it opens.
_ADDED_COLUMNS = (("studies", "owner", "TEXT NOT NULL DEFAULT ''"),
                  ("studies", "owner_key_hash", "TEXT NOT NULL DEFAULT ''"), ("studies", "closed", "REAL"),
                  ("sessions", "identity", "TEXT NOT NULL DEFAULT ''"))
OWNER_ONLY = ("The results of a blind comparison are its owner's while voting is open: enter the owner key that "
              "was shown when it was made (or open it signed in as its owner). Judges see the verdict after the "
              "owner closes the comparison.")


class JudgingError(UserError, ValueError):
    """A judging problem explained to the user (unknown id, sets that cannot be paired, …)."""


@dataclass(frozen=True)
class Study:
    """A blind comparison: its question, the optional names of A and B, its pairs and what the user was told."""

    id: str
    question: str
    pairing: str | None
    names: tuple[str, str]
    notes: list[str]
    pair_count: int
    created: float
    seed: int
    digests: dict[str, str] = field(default_factory=dict)  # set -> set_digest of its images (order-free)
    owner: str = ""  # owners.Owner.key of who made it
    closed: float | None = None  # when the owner closed it (results open to judges from then on)
    owner_key: str = ""  # the secret that proves ownership: set only on the Study that create_study returns

    @property
    def folder(self) -> Path:
        return study_folder(self.id)


@dataclass(frozen=True)
class Pair:
    index: int
    a_token: str
    b_token: str
    a_name: str  # the original file names: never shown while judging
    b_name: str
    a_index: int
    b_index: int
    identical: bool
    reference: tuple[str, ...] = ()
    prompt: str = ""


@dataclass(frozen=True)
class PairView:
    """What one judge sees now: the pair at `position` of the session, left and right, or `done`."""

    session: str
    study: str
    judge: str
    position: int  # votes given so far in this session = index of the pair shown
    total: int
    question: str
    left_image: Path | None = None
    right_image: Path | None = None
    reference_images: list[Path] = field(default_factory=list)
    prompt: str = ""
    identical: bool = False
    stale: bool = False  # the vote answered a pair no longer shown (a repeated key press) and was ignored

    @property
    def done(self) -> bool:
        return self.position >= self.total


@dataclass(frozen=True)
class VoteRecord:
    """One stored vote, with everything the CSV export holds."""

    study: str
    session: str
    judge: str  # the name the judge typed (may be empty)
    identity: str  # who the judge is: a login or browser key (one per person; see module notes)
    position: int
    pair: int
    image_a: str
    image_b: str
    left: str  # the set shown on the left: "A" or "B"
    answer: str  # what the judge pressed: left, right, tie, skip
    choice: str  # what it means: A, B, tie, skip
    counted: bool  # in the tally: not a skip, and the pair shows two different images
    identical: bool  # the pair shows the same image on both sides
    time: float
    seconds: float | None


def judging_root() -> Path:
    """Studies are reachable across visitors (a judge opens one by its id): under the outputs ROOT, not the
    owner's folder; what each visitor may see of one is decided per call (see the module notes)."""
    return settings.outputs_root() / "judging"


def study_folder(study_id: str) -> Path:
    return judging_root() / study_id


def _key_hash(owner_key: str) -> str:
    return hashlib.sha256(f"asl-judging:{owner_key}".encode()).hexdigest()


def judge_identity(judge: str, session_id: str) -> str:
    """The judge's one identity: their login or browser key; on a single computer (no key known), the typed
    name, else the session (each anonymous session then counts as its own judge)."""
    visitor = owners.current_visitor()
    if visitor.kind != "local":
        return visitor.key
    name = (judge or "").strip().lower()
    return f"name:{name}" if name else f"session:{session_id}"


def _choice(answer: str, left: str) -> str:
    if answer in ("tie", "skip"):
        return answer
    right = "B" if left == "A" else "A"
    return left if answer == "left" else right


# ------------------------------------------------------------------------------------------ pairing
def _image_digest(image: np.ndarray) -> str:
    import hashlib

    array = np.ascontiguousarray(image)
    return hashlib.sha256(f"{array.shape}".encode() + array.tobytes()).hexdigest()


def set_digest(images: Sequence[np.ndarray]) -> str:
    """sha256 of the sorted image digests: the same images give the same digest in any order."""
    return hashlib_of(sorted(_image_digest(image) for image in images))


def hashlib_of(digests: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(digests).encode()).hexdigest()


def random_pairs(n_a: int, n_b: int, count: int, rng: np.random.Generator,
                 identical: set[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """`count` (a, b) pairs drawn at random, each image used about equally often (counts differ by at most 1
    within a set), no pair twice where the sets allow it, and at most one pair of each identical image."""
    identical = identical or set()

    def cycle(n: int) -> list[int]:
        order: list[int] = []
        while len(order) < count:
            order += [int(i) for i in rng.permutation(n)]
        return order[:count]

    a_seq, b_seq = cycle(n_a), cycle(n_b)
    seen_identical: set[int] = set()
    used: set[tuple[int, int]] = set()

    def unusable(pair: tuple[int, int]) -> bool:
        return pair in used or (pair in identical and pair[0] in seen_identical)

    kept: list[int] = []  # positions whose pair is taken
    for t in range(count):
        if unusable((a_seq[t], b_seq[t])):  # swap B with a later position that fits: every count stays the same
            for u in rng.permutation(np.arange(t + 1, count)):
                if not unusable((a_seq[t], b_seq[u])):
                    b_seq[t], b_seq[u] = b_seq[u], b_seq[t]
                    break
        if unusable((a_seq[t], b_seq[t])):  # none later: trade B images with a pair already taken
            for u in rng.permutation(np.array(kept, dtype=int)):
                old, new_u, new_t = (a_seq[u], b_seq[u]), (a_seq[u], b_seq[t]), (a_seq[t], b_seq[u])
                taken = {new_u, new_t} - {old}
                if new_u != new_t and not (taken & used) and not ({new_u, new_t} & identical):
                    used.discard(old)
                    used.add(new_u)
                    b_seq[t], b_seq[u] = b_seq[u], b_seq[t]
                    break
        pair = (a_seq[t], b_seq[t])
        if unusable(pair):
            continue  # no way around a repeat: one pair fewer
        if pair in identical:
            seen_identical.add(pair[0])
        used.add(pair)
        kept.append(t)
    return [(a_seq[t], b_seq[t]) for t in kept]


def names_match(names_a: Sequence[str], names_b: Sequence[str]) -> bool:
    """Whether pairing by file name makes sense: at least half of the smaller set (and 2 images, unless a set
    has one) finds its namesake in the other."""
    shared = len(set(names_a) & set(names_b))
    smallest = min(len(names_a), len(names_b))
    return smallest > 0 and shared >= max(min(2, smallest), smallest / 2)


def _times(share: float) -> str:
    return "once" if share == 1 else f"about {share:.3g} times"


def _pairs_for(set_a, set_b, pairing: str | None, pair_count: int | None, rng: np.random.Generator,
               identical: set[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[str]]:
    """The pairs and the sentences that tell the user how the sets were paired."""
    from .imagesets import pair_indices

    n_a, n_b = len(set_a), len(set_b)
    notes: list[str] = []
    if pairing == "auto":
        pairing = "name" if names_match(set_a.names, set_b.names) else None
        notes.append("The file names of A and B match, so each image is paired with its namesake." if pairing else
                     "The file names of A and B do not match, so images are paired at random.")
    if pairing == "name":
        try:
            pairs = pair_indices(set_a, set_b, "name")
        except ValueError as err:
            raise JudgingError(f"{err} Choose \"Random pairs\" to compare the sets without matching names.") \
                from err
        left_a, left_b = n_a - len(pairs), n_b - len(pairs)
        notes.append(f"Paired by file name: {len(pairs)} pairs.")
        if left_a or left_b:
            notes.append(f"{left_a} images of A and {left_b} of B have no partner with the same file name and are "
                         f"left out.")
    elif pairing == "order":
        pairs = [(i, i) for i in range(min(n_a, n_b))]
        notes.append(f"Paired by order: image 1 of A with image 1 of B, and so on: {len(pairs)} pairs.")
        if n_a != n_b:
            longer, extra = ("A", n_a - n_b) if n_a > n_b else ("B", n_b - n_a)
            notes.append(f"The sets differ in size ({n_a} and {n_b} images): the last {extra} images of {longer} "
                         f"have no partner and are left out. Choose \"Random pairs\" to use every image.")
    elif pairing is None:
        distinct = n_a * n_b - max(0, len(identical) - len({i for i, _ in identical}))
        wanted = int(pair_count) if pair_count else max(n_a, n_b)
        count = min(wanted, distinct, MAX_PAIRS)
        pairs = random_pairs(n_a, n_b, count, rng, identical)
        notes.append(f"Random pairs: {len(pairs)} pairs, each of an image of A and an image of B, every image "
                     f"used about equally often (each of A's {n_a} images {_times(len(pairs) / n_a)}, each of B's "
                     f"{n_b} {_times(len(pairs) / n_b)}).")
        if wanted > len(pairs):
            notes.append(f"{wanted} pairs were asked for, but the sets make only {len(pairs)} different pairs"
                         + (f" (at most {MAX_PAIRS})" if wanted > MAX_PAIRS else "") + ".")
    else:
        raise JudgingError(f"Unknown pairing {pairing!r}: use none (random pairs), 'auto', 'name' or 'order'.")
    if pairing is not None and pair_count and int(pair_count) < len(pairs):
        keep = sorted(rng.choice(len(pairs), int(pair_count), replace=False).tolist())
        pairs = [pairs[k] for k in keep]
        notes.append(f"{len(pairs)} of these pairs were drawn at random for judging.")
    if len(pairs) > MAX_PAIRS:
        pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), MAX_PAIRS, replace=False).tolist())]
        notes.append(f"Only {MAX_PAIRS} pairs, drawn at random, are judged.")
    for label, n in (("A", n_a), ("B", n_b)):
        if n == 1:
            notes.append(f"Set {label} has only one image: every pair shows it, so the verdict is about that one "
                         f"image rather than a set.")
    if len(pairs) == 1:
        notes.append("There is only one pair: each judge gives one vote, and a verdict needs many votes "
                     "(several judges, or more images).")
    return pairs, notes


# ------------------------------------------------------------------------------------------ the store
def _create_schema(db: sqlite3.Connection) -> None:
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
    db.executescript(_SCHEMA)
    for table, column, declaration in _ADDED_COLUMNS:
        if column not in {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


class JudgingStore:
    """Comparisons, sessions and votes in SQLite (one connection per call: safe across Gradio's threads)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else judging_root() / "judging.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        open_database(self.path, _create_schema)  # a damaged file is set aside (the banner says so), not fatal

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: other writers wait; all of it or nothing lands)."""
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                db.close()

    def _read(self, query: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        db = self._connect()
        try:
            return db.execute(query, args).fetchall()
        finally:
            db.close()

    # ----------------------------------------------------------------------------------- comparisons
    def create_study(self, set_a, set_b, *, reference=None, prompts: Sequence[str] | None = None,
                     pairing: str | None = None, pair_count: int | None = None,
                     question: str = QUESTIONS[0], names: tuple[str, str] = ("", ""), seed: int | None = None,
                     study_id: str | None = None, allow_folders: bool | None = None) -> Study:
        """Turn two sets (files, zips, "run:ID", arrays, ImageSets) into a blind comparison with fixed pairs.

        pairing: None draws random pairs (pair_count of them, default the larger set's size); "name" or "order"
        pair the sets as the metrics do. Pairs showing the same image on both sides are kept once, marked, and
        left out of the tally. reference / prompts are shown beside each pair."""
        from .imagesets import as_image_set

        if pairing not in PAIRINGS:
            raise JudgingError(f"Unknown pairing {pairing!r}: use none (random pairs), 'auto', 'name' or 'order'.")
        try:
            sets = {"A": as_image_set(set_a, "A", allow_folders), "B": as_image_set(set_b, "B", allow_folders)}
            ref = as_image_set(reference, "reference", allow_folders) if reference is not None else None
        except JudgingError:
            raise
        except ValueError as err:
            raise JudgingError(str(err)) from err
        seed = int(seed) if seed is not None else secrets.randbelow(2**31)
        rng = np.random.default_rng(seed)
        digests = {label: [_image_digest(image) for image in s.images] for label, s in sets.items()}
        identical = {(i, j) for i, da in enumerate(digests["A"]) for j, db in enumerate(digests["B"]) if da == db}
        pairs, notes = _pairs_for(sets["A"], sets["B"], pairing, pair_count, rng, identical)
        prompt_for = _prompt_picker(list(prompts or []), len(sets["A"]), pairs)
        same = [k for k, pair in enumerate(pairs) if pair in identical]
        if same:
            notes.append(f"{len(same)} pairs show the same image on both sides: each is shown once, marked, and "
                         f"left out of the tally.")
        for label, image_set in (*sets.items(), *((("reference", ref),) if ref else ())):
            notes += [f"Set {label}: skipped {item}" for item in image_set.skipped]
        study_id = study_id or secrets.token_hex(6)
        folder = study_folder(study_id)
        ref_names = ref.names if ref else []
        shown = [_reference_for(k, sets["A"].names[i], ref_names, seed) for k, (i, _) in enumerate(pairs)]
        tokens = {"A": _write_images(sets["A"].images, {i for i, _ in pairs}, folder),
                  "B": _write_images(sets["B"].images, {j for _, j in pairs}, folder),
                  "reference": _write_images(ref.images, {r for refs in shown for r in refs}, folder) if ref else {}}
        rows = []
        for k, (i, j) in enumerate(pairs):
            references = [tokens["reference"][r] for r in shown[k]]
            rows.append((study_id, k, tokens["A"][i], tokens["B"][j], sets["A"].names[i], sets["B"].names[j], i, j,
                         int((i, j) in identical), json.dumps(references), prompt_for(k, i)))
        set_digests = {label: hashlib_of(sorted(values)) for label, values in digests.items()}
        owner_key = secrets.token_urlsafe(12)
        study = Study(study_id, question.strip() or QUESTIONS[0], pairing, (names[0].strip(), names[1].strip()),
                      notes, len(rows), time.time(), seed, set_digests, owner=owners.current_owner().key,
                      owner_key=owner_key)
        with self._transaction() as db:
            db.execute("INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (study.id, study.created, study.question, pairing, json.dumps(study.names),
                        json.dumps(notes), study.pair_count, seed, json.dumps(set_digests), study.owner,
                        _key_hash(owner_key), None))
            db.executemany("INSERT INTO pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return study

    def study(self, study_id: str) -> Study:
        rows = self._read("SELECT * FROM studies WHERE id = ?", ((study_id or "").strip(),))
        if not rows:
            raise JudgingError(f"No blind comparison with id {study_id!r}. Check the id (it is shown when the "
                               f"comparison is made, and in History).")
        row = rows[0]
        return Study(row["id"], row["question"], row["pairing"], tuple(json.loads(row["names"])),
                     json.loads(row["notes"]), row["pair_count"], row["created"], row["seed"],
                     json.loads(row["digests"]), row["owner"], row["closed"])

    def is_owner(self, study_id: str, owner_key: str | None = None) -> bool:
        """Whether the caller owns the study: they hold its owner key, or (multi-user) they are its owner."""
        rows = self._read("SELECT owner, owner_key_hash FROM studies WHERE id = ?", ((study_id or "").strip(),))
        if not rows:
            return False
        key = (owner_key or "").strip()
        if key and secrets.compare_digest(_key_hash(key), rows[0]["owner_key_hash"]):
            return True
        return owners.multi_user() and bool(rows[0]["owner"]) and owners.current_owner().key == rows[0]["owner"]

    def may_see_results(self, study_id: str, owner_key: str | None = None) -> bool:
        """The owner always; anyone with the id once the owner has closed the study."""
        return self.study(study_id).closed is not None or self.is_owner(study_id, owner_key)

    def _require_owner(self, study_id: str, owner_key: str | None) -> None:
        if not self.is_owner(study_id, owner_key):
            raise JudgingError(OWNER_ONLY)

    def close(self, study_id: str, owner_key: str | None = None) -> Study:
        """The owner ends the voting: from now on anyone with the id sees the verdict (votes are refused)."""
        study = self.study(study_id)
        self._require_owner(study.id, owner_key)
        if study.closed is None:
            with self._transaction() as db:
                db.execute("UPDATE studies SET closed = ? WHERE id = ?", (time.time(), study.id))
        return self.study(study.id)

    def pairs(self, study_id: str, owner_key: str | None = None, *, trusted: bool = False) -> list[Pair]:
        """The pairs with their served names, sets and file names: the owner's only (trusted: internal use)."""
        if not trusted:
            self._require_owner(study_id, owner_key)
        return [_pair_from(row) for row in self._read("SELECT * FROM pairs WHERE study = ? ORDER BY pair",
                                                      (study_id,))]

    def studies(self, limit: int = 100) -> list[Study]:
        """The current owner's studies, newest first (everyone's is one owner's on a single-user server)."""
        owner = owners.current_owner().key
        rows = self._read("SELECT id FROM studies WHERE owner = ? OR ? = 0 ORDER BY created DESC LIMIT ?",
                          (owner, int(owners.multi_user()), limit))
        return [self.study(row["id"]) for row in rows]

    # ----------------------------------------------------------------------------------- sessions
    def start_session(self, study_id: str, judge: str = "", seed: int | None = None) -> str:
        """A new judging session of the comparison: its own pair order and sides; returns the session id.

        The judge is the current visitor (see judge_identity); repeat_sessions() tells when they had one."""
        study = self.study(study_id)
        if study.closed is not None:
            raise JudgingError("This blind comparison is closed: its owner has ended the voting. See its results "
                               "under 3 · Results.")
        seed = int(seed) if seed is not None else secrets.randbelow(2**31)
        rng = np.random.default_rng(seed)
        order = rng.permutation(study.pair_count)
        sides = rng.random(study.pair_count) < 0.5
        schedule = [[int(pair), "A" if left_a else "B"] for pair, left_a in zip(order, sides, strict=True)]
        session_id = secrets.token_hex(5)
        identity = judge_identity(judge, session_id)
        with self._transaction() as db:
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (session_id, study.id, (judge or "").strip(), time.time(), seed, json.dumps(schedule), None,
                        identity))
        return session_id

    def earlier_sessions(self, session_id: str) -> int:
        """How many sessions of the same study the same judge (identity) opened before this one."""
        rows = self._read("SELECT COUNT(*) AS n FROM sessions s JOIN sessions t ON t.study = s.study AND "
                          "t.identity = s.identity AND t.created < s.created WHERE s.id = ?", (session_id,))
        return int(rows[0]["n"]) if rows else 0

    def sessions(self, study_id: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT s.id, s.judge, s.identity, s.created, (SELECT COUNT(*) FROM votes v WHERE "
                          "v.session = s.id) AS votes FROM sessions s WHERE s.study = ? ORDER BY s.created",
                          (study_id,))
        return [dict(row) for row in rows]

    def repeat_sessions(self, study_id: str) -> dict[str, int]:
        """Judges (identity -> sessions) who opened more than one session of the study."""
        rows = self._read("SELECT identity, COUNT(*) AS n FROM sessions WHERE study = ? GROUP BY identity "
                          "HAVING COUNT(*) > 1", (study_id,))
        return {row["identity"]: int(row["n"]) for row in rows}

    def view(self, session_id: str) -> PairView:
        """The pair this session shows now (the first one not yet answered), or a finished view."""
        with self._transaction() as db:
            return self._view(db, self._session_in(db, session_id), stale=False)

    def vote(self, session_id: str, position: int, answer: str) -> PairView:
        """Record the answer to the pair at `position` and return the next view.

        A vote for any other position (a key pressed twice, a second browser tab) is ignored: the view that is
        current is returned with stale=True. The vote and the next view are one transaction."""
        if answer not in ANSWERS:
            raise JudgingError(f"An answer is one of {', '.join(ANSWERS)}; got {answer!r}.")
        with self._transaction() as db:
            session = self._session_in(db, session_id)
            if session["closed"] is not None:
                raise JudgingError("This blind comparison is closed: its owner has ended the voting, so no more "
                                   "votes are taken.")
            schedule = json.loads(session["schedule"])
            count = _vote_count(db, session["id"])
            if int(position) != count or count >= len(schedule):
                return self._view(db, session, stale=True)
            pair_index, left = schedule[count]
            identical = db.execute("SELECT identical FROM pairs WHERE study = ? AND pair = ?",
                                   (session["study"], pair_index)).fetchone()[0]
            now, shown_at = time.time(), session["shown_at"]
            db.execute("INSERT INTO votes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (session["id"], count, session["study"], pair_index, left, answer, _choice(answer, left),
                        int(identical), now, None if shown_at is None else max(0.0, now - shown_at)))
            return self._view(db, session, stale=False)

    def undo(self, session_id: str) -> PairView:
        """Take back this session's last vote (only this session's) and show that pair again."""
        with self._transaction() as db:
            session = self._session_in(db, session_id)
            db.execute("DELETE FROM votes WHERE session = ? AND position = "
                       "(SELECT MAX(position) FROM votes WHERE session = ?)", (session["id"], session["id"]))
            return self._view(db, session, stale=False)

    def _session_in(self, db: sqlite3.Connection, session_id: str) -> sqlite3.Row:
        row = db.execute("SELECT s.*, t.question, t.closed FROM sessions s JOIN studies t ON t.id = s.study "
                         "WHERE s.id = ?",
                         ((session_id or "").strip(),)).fetchone()
        if row is None:
            raise JudgingError(f"No judging session with id {session_id!r}. Start a new one with the comparison's "
                               f"id, or check the session id you were given.")
        return row

    def _view(self, db: sqlite3.Connection, session: sqlite3.Row, stale: bool) -> PairView:
        """The current view of `session`, read inside the caller's transaction; marks when the pair was shown."""
        schedule = json.loads(session["schedule"])
        position = _vote_count(db, session["id"])
        base = dict(session=session["id"], study=session["study"], judge=session["judge"], position=position,
                    total=len(schedule), question=session["question"], stale=stale)
        if position >= len(schedule):
            return PairView(**base)
        pair_index, left = schedule[position]
        pair = _pair_from(db.execute("SELECT * FROM pairs WHERE study = ? AND pair = ?",
                                     (session["study"], pair_index)).fetchone())
        db.execute("UPDATE sessions SET shown_at = ? WHERE id = ?", (time.time(), session["id"]))
        folder = study_folder(session["study"])
        tokens = (pair.a_token, pair.b_token) if left == "A" else (pair.b_token, pair.a_token)
        return PairView(**base, left_image=folder / f"{tokens[0]}.png", right_image=folder / f"{tokens[1]}.png",
                        reference_images=[folder / f"{token}.png" for token in pair.reference], prompt=pair.prompt,
                        identical=pair.identical)

    # ----------------------------------------------------------------------------------- results
    def votes(self, study_id: str, session_id: str | None = None) -> list[VoteRecord]:
        """Every stored vote with the pair's file names: for the owner (the callers check; see export_study)."""
        query = ("SELECT v.*, s.judge, s.identity, p.a_name, p.b_name FROM votes v JOIN sessions s ON s.id = v.session "
                 "JOIN pairs p ON p.study = v.study AND p.pair = v.pair WHERE v.study = ?")
        args: list[Any] = [study_id]
        if session_id:
            query, args = query + " AND v.session = ?", [*args, session_id]
        rows = self._read(query + " ORDER BY v.time, v.session, v.position", args)
        return [VoteRecord(row["study"], row["session"], row["judge"], row["identity"] or row["judge"] or
                           row["session"], row["position"], row["pair"], row["a_name"],
                           row["b_name"], row["left_set"], row["answer"], row["choice"],
                           not row["identical"] and row["choice"] != "skip", bool(row["identical"]), row["time"],
                           row["seconds"]) for row in rows]

    def result(self, study_id: str, session_id: str | None = None, confidence: float = 0.95, *,
               owner_key: str | None = None, trusted: bool = False) -> PreferenceResult:
        """The statistics of the comparison's votes (all sessions, or one): see preference.preference_result.

        For the owner while voting is open, for anyone once it is closed (trusted: internal use, no check).
        Each judge is one identity, and their first answer to a pair is the one counted (votes come in time
        order). Skips are reported but never tallied; votes on pairs of identical images are not counted."""
        study = self.study(study_id)
        if not trusted and not self.may_see_results(study.id, owner_key):
            raise JudgingError(OWNER_ONLY)
        records = self.votes(study.id, session_id)
        votes = [Vote(choice=v.choice, pair=v.pair, judge=v.identity, counted=not v.identical) for v in records]
        result = preference_result(votes, confidence=confidence, names=study.names)
        labels = _judge_labels(records)  # identities are keys: show the names judges typed
        return replace(result, judges=[replace(j, judge=labels.get(j.judge, j.judge)) for j in result.judges])


def _judge_labels(records: Sequence[VoteRecord]) -> dict[str, str]:
    """identity -> the name the judge typed (first one given), else "judge N" in order of first vote."""
    labels: dict[str, str] = {}
    for record in records:
        if record.identity not in labels or (not labels[record.identity] and record.judge):
            labels[record.identity] = record.judge
    unnamed = iter(range(1, len(labels) + 1))
    return {identity: name or f"judge {next(unnamed)}" for identity, name in labels.items()}


def _vote_count(db: sqlite3.Connection, session_id: str) -> int:
    return int(db.execute("SELECT COUNT(*) FROM votes WHERE session = ?", (session_id,)).fetchone()[0])


def _pair_from(row: sqlite3.Row) -> Pair:
    return Pair(row["pair"], row["a_token"], row["b_token"], row["a_name"], row["b_name"], row["a_index"],
                row["b_index"], bool(row["identical"]), tuple(json.loads(row["reference"])), row["prompt"])


def _write_images(images: Sequence[np.ndarray], used: set[int], folder: Path) -> dict[int, str]:
    """Save the images that pairs show as PNGs with no metadata under random names; {index: name}."""
    from PIL import Image

    tokens = {}
    for index in sorted(used):
        token = secrets.token_hex(8)
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(images[index], dtype=np.uint8)).save(buffer, format="PNG")
        atomic_write_bytes(folder / f"{token}.png", buffer.getvalue())
        tokens[index] = token
    return tokens


def _reference_for(pair: int, a_name: str, ref_names: list[str], seed: int) -> list[int]:
    """The reference images shown beside a pair: the one with A's file name, else all (up to 3 at random)."""
    if not ref_names:
        return []
    if a_name in ref_names:
        return [ref_names.index(a_name)]
    if len(ref_names) <= MAX_REFERENCE_SHOWN:
        return list(range(len(ref_names)))
    rng = np.random.default_rng([seed, pair])
    return sorted(int(k) for k in rng.choice(len(ref_names), MAX_REFERENCE_SHOWN, replace=False))


def _prompt_picker(prompts: list[str], n_a: int, pairs: list[tuple[int, int]]):
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        return lambda k, i: ""
    if len(prompts) == 1:
        return lambda k, i: prompts[0]
    if len(prompts) == n_a:
        return lambda k, i: prompts[i]
    raise JudgingError(f"Give one prompt for every image of A ({n_a}) or a single prompt for all; got "
                       f"{len(prompts)}.")


# ------------------------------------------------------------------------------------------ recorded runs
_STORES: dict[Path, JudgingStore] = {}
_STORES_LOCK = threading.Lock()


def default_judging_store() -> JudgingStore:
    """The store under the outputs root (one per folder): reachable by every visitor who has a study's id."""
    path = (judging_root() / "judging.sqlite").resolve()
    with _STORES_LOCK:
        if path not in _STORES:
            _STORES[path] = JudgingStore(path)
        return _STORES[path]


def _describe(source: Any) -> Any:
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(str(source)) if not str(source).startswith("run:") else str(source)
    if isinstance(source, list) and all(isinstance(item, (str, os.PathLike)) for item in source):
        return [_describe(item) for item in source]
    if hasattr(source, "images"):
        return f"{len(source.images)} images in memory"
    return f"{len(source)} arrays"


def run_create_study(set_a, set_b, *, reference=None, store: JudgingStore | None = None,
                     runs: RunStore | None = None, **options: Any) -> tuple[RunRecord, Study]:
    """create_study() recorded in History: the run's id is the comparison's id."""
    store = store or default_judging_store()
    runs = runs or default_store()
    # The names of A and B join the record when the owner exports the results (see export_study).
    params = {"kind": KIND, "set_a": _describe(set_a), "set_b": _describe(set_b), "reference": _describe(reference),
              **{key: value for key, value in options.items() if key in ("pairing", "pair_count", "question",
                                                                         "seed")}}
    record = RunRecord(tab=TAB, params=params, seed=options.get("seed"))
    with runs.run(record), record.stage("copy images"):
        study = store.create_study(set_a, set_b, reference=reference, study_id=record.id, **options)
        record.seed = study.seed
        params.update(pairs=study.pair_count, notes=study.notes, question=study.question, seed=study.seed,
                      votes=0, verdict="No verdict yet: no votes are counted.")
    return record, study


VOTE_COLUMNS = ["study", "session", "judge", "identity", "position", "pair", "image_a", "image_b", "left", "answer",
                "choice", "counted", "identical", "time", "time_utc", "seconds"]


def votes_csv(votes: Sequence[VoteRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=VOTE_COLUMNS)
    writer.writeheader()
    for vote in votes:
        writer.writerow({**asdict(vote), "time_utc": _utc(vote.time)})
    return buffer.getvalue()


def _utc(stamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat(timespec="seconds")


@dataclass
class JudgingFiles:
    votes_csv: Path
    json: Path


def export_study(study_id: str, *, owner_key: str | None = None, store: JudgingStore | None = None,
                 runs: RunStore | None = None) -> tuple[PreferenceResult, JudgingFiles]:
    """The owner's export: every vote (CSV) and the comparison, pairs map, result and votes (JSON) under the
    owner's outputs/metrics/, atomically; brings the History record's verdict (and A's and B's names) up to date."""
    store = store or default_judging_store()
    runs = runs or default_store()
    study = store.study(study_id)
    pairs = store.pairs(study.id, owner_key)  # the owner's only: raises for anyone else
    votes = store.votes(study.id)
    result = store.result(study.id, trusted=True)
    stem = settings.outputs_dir() / "metrics" / f"{study.id}_judging"
    document = {"study": {**asdict(study), "names": list(study.names)}, "sessions": store.sessions(study.id),
                "pairs": [asdict(pair) for pair in pairs], "result": result.to_dict(),
                "votes": [{**asdict(vote), "time_utc": _utc(vote.time)} for vote in votes]}
    files = JudgingFiles(votes_csv=atomic_write_bytes(f"{stem}_votes.csv", votes_csv(votes).encode()),
                         json=atomic_write_bytes(f"{stem}.json", json.dumps(document, indent=2).encode()))
    record = runs.get(study.id)
    if record is not None:
        if study.closed is not None:  # History is everyone's on a single-user server: the names wait until then
            record.params["names"] = list(study.names)
        record.params.update(votes=result.votes, verdict=result.verdict, judges=result.tally.judges,
                             closed=study.closed is not None,
                             files={"votes_csv": str(files.votes_csv), "json": str(files.json)})
        runs.save(record)
    return result, files


def same_images(study_id: str, comparison_id: str, *, store: JudgingStore | None = None,
                runs: RunStore | None = None) -> bool | None:
    """Whether a recorded metric comparison used the same images in A and in B as this judging (in any order);
    None when that cannot be checked (images given in memory, or its files are gone)."""
    from .imagesets import load_image_set

    study = (store or default_judging_store()).study(study_id)
    record = (runs or default_store()).get(comparison_id)
    if record is None or not study.digests:
        return None
    for label, key in (("A", "set_a"), ("B", "set_b")):
        source = record.params.get(key)
        if not source or isinstance(source, dict) or (isinstance(source, str) and source.endswith(" arrays")):
            return None
        try:
            images = load_image_set(source, label).images
        except (ValueError, OSError):
            return None
        if set_digest(images) != study.digests.get(label):
            return False
    return True


def rerun_metrics_run(params: dict[str, Any], store: RunStore) -> RunRecord:
    """History's re-run for the Metrics / A-B tab: comparisons run again; a blind judging is people's work."""
    if params.get("kind") == KIND:
        raise JudgingError("A blind judging is done by people and cannot be re-run. To add votes, open Metrics / "
                           "A-B › Judge by eye (blind) and start a session with the comparison's id (the run id).")
    from .runs import rerun_comparison

    return rerun_comparison(params, store)
