"""Metrics / A-B › Judge by eye (blind): people compare two image sets pair by pair; the app does the statistics.

Components and handlers only: the pairs, sessions, votes and statistics are in pipelines.metrics.judging and
pipelines.metrics.preference. It takes the sets given at the top of the Metrics / A-B tab. While a person judges,
the page shows neither the sets' names nor any file name: images are served as copies under random names, the
set inputs are emptied once the comparison is made, and what the judge pressed is reported as "left"/"right",
never as a set. Results (page, API and downloads) are the owner's while voting is open: they need the owner key
shown once at creation (or, on a multi-user server, the owner's own visit); judges see the verdict after the owner
closes the comparison, and the pairs map and the split pairs' pictures stay the owner's.
"""

from __future__ import annotations

import html
import math
from typing import Any

import gradio as gr

from .common import friendly_errors, keeps_results
from .metrics import COLUMN_WIDTHS, TABLE_HEADERS, set_sources, table_row

AUTO = "Automatic: by file name when the names match, else random pairs"
RANDOM = "Random pairs (every image used about equally)"
# Worded unlike the metrics' pairing radio ("Pair by …"), so that each label names one control on the page.
PAIRING = {AUTO: "auto", RANDOM: None, "By file name": "name", "By order (1st with 1st …)": "order"}
JUDGE_HEADERS = ["Judge", "Votes", "B won", "A won", "Ties", "Skipped", "B's win rate", "95% interval"]
INTRO = ("Compare sets A and B (given above) **by eye**, blind: the app shows one pair at a time, A and B on random "
         "sides with their names hidden, and turns the votes into a verdict with a 95% interval. **1 · Set up** "
         "makes the comparison (once) and gives you its id and an **owner key**; **2 · Judge** is for everyone who "
         "judges it, each on their own device or browser; **3 · Results** is yours while voting is open (with the "
         "owner key) and everyone's once you close it.")
STOPPING_RULE = ("**Stopping rule:** decide how many judges you want before you start, and close the comparison "
                 "when they are done. The running verdict is shown only to you while voting is open; stopping the "
                 "moment it looks good makes a false winner more likely than the 5% the test promises.")
KEYS = ("**Keys:** ← or 1 left is better · → or 2 right is better · ↓, T or 0 tie · S skip · U or Backspace undo "
        "the last vote.")
LAST_SESSION_KEY = "asl-judge-session"

# Installed once per page: keys press the answer buttons, and only while they are on screen (not while typing).
KEYBOARD_JS = """
const keys = {ArrowLeft: 'jd-left', '1': 'jd-left', ArrowRight: 'jd-right', '2': 'jd-right',
              ArrowDown: 'jd-tie', t: 'jd-tie', T: 'jd-tie', '0': 'jd-tie', s: 'jd-skip', S: 'jd-skip',
              u: 'jd-undo', U: 'jd-undo', Backspace: 'jd-undo'};
if (!window.__aslJudgeKeys) {
  window.__aslJudgeKeys = true;
  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (target && (['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName) || target.isContentEditable)) return;
    const button = document.getElementById(keys[event.key] || '');
    if (!button || button.offsetParent === null || button.disabled) return;
    event.preventDefault();
    button.click();
  });
}
const last = window.localStorage && localStorage.getItem('LAST_SESSION_KEY');
const note = element.querySelector('.jd-last');
if (last && note) note.textContent = 'Your last session in this browser: ' + last;
""".replace("LAST_SESSION_KEY", LAST_SESSION_KEY)
# After start/resume: remember the session in this browser and bring the pair into view.
REMEMBER_JS = ("(session) => { try { localStorage.setItem('LAST_SESSION_KEY', session); } catch (e) {} "
               "const panel = document.getElementById('jd-question'); if (panel) panel.scrollIntoView(); }"
               ).replace("LAST_SESSION_KEY", LAST_SESSION_KEY)


def _store():
    from pipelines.metrics.judging import default_judging_store

    return default_judging_store()


def comparison_run_choices() -> list[tuple[str, str]]:
    """Recorded metric comparisons (not judgings) whose rows the verdict can sit beside."""
    import datetime

    from pipelines.core.records import default_store
    from pipelines.metrics import TAB

    choices = [("none", "")]
    for record in default_store().list(tab=TAB, limit=100):
        if record.params.get("kind") != "judging" and record.status == "done" and record.params.get("files"):
            when = datetime.datetime.fromtimestamp(record.created).strftime("%m-%d %H:%M")
            choices.append((f"comparison · {when} · {record.id}", record.id))
    return choices


# ------------------------------------------------------------------------------------------ set up
def create_comparison(files_a, runs_a, folder_a, name_a: str, files_b, runs_b, folder_b, name_b: str, files_ref,
                      show_reference: bool, prompts_text: str, question: str, pairing: str, pair_count,
                      progress=gr.Progress()):
    """Make the blind comparison from the sets given above; empty those inputs so no name stays on the page."""
    from pipelines.metrics.judging import run_create_study

    set_a, set_b = set_sources(files_a, runs_a, folder_a), set_sources(files_b, runs_b, folder_b)
    if not set_a or not set_b:
        raise ValueError("Give images for both set A and set B at the top of this tab (files, a zip, or runs "
                         "from History).")
    if pairing not in PAIRING:
        raise ValueError(f"Choose how to pair the sets: {', '.join(PAIRING)}.")
    reference = (set_sources(files_ref, None, None) or None) if show_reference else None
    prompts = [line.strip() for line in (prompts_text or "").splitlines() if line.strip()] or None
    progress(0.1, desc="Copying the images under neutral names")
    record, study = run_create_study(set_a, set_b, reference=reference, prompts=prompts, pairing=PAIRING[pairing],
                                     pair_count=int(pair_count or 0) or None, question=question or "",
                                     names=(name_a or "", name_b or ""))
    lines = [f"**Blind comparison ready: `{study.id}`** ({study.pair_count} pairs). Give this id to everyone who "
             f"judges: they enter it under **2 · Judge**. It is also run `{record.id}` in History.",
             f"**Your owner key: `{study.owner_key}`** — keep it (it is shown only now): with it, **3 · Results** "
             f"shows you the running verdict while voting is open and lets you close the comparison. Do not give "
             f"it to judges.", *[f"- {note}" for note in study.notes],
             "- The set inputs above were emptied, so that no set or file name stays on the page while people "
             "judge; the comparison keeps its own copies.", STOPPING_RULE]
    cleared = [None, gr.Dropdown(value=[]), "", "", None, gr.Dropdown(value=[]), "", ""]
    return ["\n".join(lines), study.id, study.id, study.owner_key, *cleared]


# ------------------------------------------------------------------------------------------ judging
def _progress_html(position: int, total: int) -> str:
    shown = min(position + 1, total)
    text = f"Pair {shown} of {total}" if position < total else f"All {total} pairs judged"
    return (f'<div class="jd-progress"><progress value="{position}" max="{max(total, 1)}" '
            f'style="width:100%"></progress><div>{html.escape(text)}</div></div>')


def _view_outputs(view, status: str) -> list[Any]:
    """Everything the judging panel shows for a PairView (the same outputs for start, resume, vote and undo)."""
    done = view.done
    question = f"### {html.escape(view.question)}" if not done else "### Thank you: every pair is judged."
    notice = ""
    if view.identical:
        notice = ("⚠️ Both sides show **the same image**: this pair is not counted. Press any answer to go on.")
    if done:  # no running verdict for judges: the owner reads it once, when voting is closed
        notice = (f"Your {view.total} answers are saved. The verdict is shown under **3 · Results** once the "
                  f"comparison's owner closes the voting.")
    references = [str(path) for path in view.reference_images]
    return [
        gr.Column(visible=True),
        view.session,
        question,
        _progress_html(view.position, view.total),
        notice,
        gr.Gallery(value=references or None, visible=bool(references) and not done),
        f"**Prompt:** {html.escape(view.prompt)}" if view.prompt and not done else "",
        None if done else str(view.left_image),
        None if done else str(view.right_image),
        gr.Row(visible=not done),
        view.position,
        status,
        "",  # the set-up message (it may name files, and holds the owner key) leaves the page once judging starts
        view.study,
        view.study,
    ]


def start_judging(comparison_id: str, judge: str):
    store = _store()
    session = store.start_session((comparison_id or "").strip(), judge=judge or "")
    view = store.view(session)
    status = (f"Your session id is **`{session}`**: keep it to come back later (closing the page loses "
              f"nothing).")
    if store.earlier_sessions(session):
        status += (" You have judged this comparison before (an earlier session of yours): only your first answer "
                   "to each pair is counted, so resume that session to go on.")
    return _view_outputs(view, status)


def resume_judging(session_id: str):
    if not (session_id or "").strip():
        raise ValueError("Enter your session id to resume (or start a new session).")
    view = _store().view(session_id.strip())
    return _view_outputs(view, f"Resumed session `{view.session}` at pair {min(view.position + 1, view.total)}.")


def _answer(answer: str):
    said = {"left": "left is better", "right": "right is better", "tie": "a tie", "skip": "skipped"}[answer]

    def vote(session_id: str, position) -> list[Any]:
        if not (session_id or "").strip():
            raise ValueError("Start or resume a judging session first.")
        if position is None or (isinstance(position, float) and math.isnan(position)):
            raise ValueError("No pair is shown yet: start or resume a session.")
        view = _store().vote(session_id.strip(), int(position), answer)
        status = ("That key was pressed twice; the second press was ignored." if view.stale else
                  f"Saved: {said} for pair {int(position) + 1}. U or Backspace takes it back.")
        return _view_outputs(view, status)

    vote.__name__ = f"vote_{answer}"
    return vote


def undo_vote(session_id: str):
    if not (session_id or "").strip():
        raise ValueError("Start or resume a judging session first.")
    view = _store().undo(session_id.strip())
    return _view_outputs(view, f"Took back the last answer: pair {view.position + 1} is shown again.")


# ------------------------------------------------------------------------------------------ results
def _comparison_rows(run_id: str) -> tuple[list[list[str]], str]:
    """The metric rows of a recorded comparison, and a line saying whether it used the same images."""
    import json
    from pathlib import Path

    from pipelines.core.records import default_store
    from pipelines.metrics.report import MetricRow

    record = default_store().get(run_id)
    path = Path((record.params.get("files") or {}).get("json", "")) if record else None
    if record is None or path is None or not path.is_file():
        raise ValueError(f"The comparison {run_id!r} has no saved report to show beside the votes.")
    known = MetricRow.__dataclass_fields__
    rows = [table_row(MetricRow(**{key: value for key, value in item.items() if key in known}))
            for item in json.loads(path.read_text()).get("rows", [])]
    return rows, f"Beside the metric rows of comparison `{record.id}`."


def close_comparison(comparison_id: str, owner_key: str):
    study = _store().close((comparison_id or "").strip(), owner_key=owner_key)
    return (f"Comparison `{study.id}` is closed: no more votes are taken, and anyone with its id now sees the "
            f"verdict under **3 · Results**. Press **Show results** to read it.")


def show_results(comparison_id: str, owner_key: str, beside: str | None):
    """The verdict for anyone once the owner has closed the comparison; while voting is open, the owner's only
    (the running verdict). The pairs map (JSON), the CSV and the split pairs' pictures are always the owner's."""
    from pipelines.metrics.judging import OWNER_ONLY, export_study, same_images

    comparison_id = (comparison_id or "").strip()
    if not comparison_id:
        raise ValueError("Enter the comparison id (shown when it was made, and in History).")
    store = _store()
    study = store.study(comparison_id)
    owner = store.is_owner(study.id, owner_key)
    if not owner and study.closed is None:
        raise ValueError(OWNER_ONLY)
    if owner:
        result, files = export_study(study.id, owner_key=owner_key)
        downloads = [str(files.votes_csv), str(files.json)]
    else:
        result, downloads = store.result(study.id), []
    state = ("**Running verdict (voting is open; only you see it).** " if study.closed is None
             else "**Final verdict (voting is closed).** ")
    lines = [state + f"**{result.verdict}**"]
    if result.tally.repeats:
        lines.append(f"- {result.tally.repeats} answers from judges who answered the same pair again (in another "
                     f"session) are not counted: each judge's first answer counts.")
    repeats = store.repeat_sessions(study.id)
    if repeats:
        lines.append(f"- {len(repeats)} judges opened more than one session ({sum(repeats.values())} sessions in "
                     f"all); each counts as one judge.")
    if result.excluded:
        lines.append(f"- {result.excluded} votes on pairs that show the same image on both sides are not counted.")
    if result.tally.skips:
        lines.append(f"- {result.tally.skips} skipped pairs are not counted.")
    named = [f"{letter} is **{html.escape(name)}**" for letter, name in zip("AB", study.names, strict=True) if name]
    if named:
        lines.append(f"- {', '.join(named)}.")
    if result.agreement is not None:
        agreement = result.agreement
        alpha = "undefined (every vote gave the same answer)" if not math.isfinite(agreement.alpha) else \
            f"{agreement.alpha:.2f}"
        lines.append(f"- Agreement between {agreement.judges} judges on the {agreement.pairs} pairs two or more of "
                     f"them answered: Krippendorff's alpha {alpha} (1 = full agreement, 0 = no better than chance); "
                     f"{100 * agreement.percent:.0f}% of judge pairs gave the same answer.")
    rows = [table_row(result.metric_row())]
    if beside:
        metric_rows, line = _comparison_rows(beside)
        rows += metric_rows
        same = same_images(comparison_id, beside)
        lines.append(f"- {line} " + {True: "It compared the same images.",
                                      False: "⚠️ It compared **other images** than this judging.",
                                      None: "Whether it used the same images cannot be checked (its files are "
                                            "gone)."}[same])
    if study.closed is None:
        lines.append(f"- {STOPPING_RULE}")
    judges = [[j.judge, j.tally.votes, j.tally.b_wins, j.tally.a_wins, j.tally.ties, j.tally.skips,
               _percent(j.tally.b_rate), _interval(j.tally.low, j.tally.high)] for j in result.judges]
    split = _disagreement_gallery(study.id, owner_key, result) if owner else []
    return ("\n".join(lines), rows,
            gr.Dataframe(value=judges or None, headers=JUDGE_HEADERS, visible=bool(judges)),
            gr.Gallery(value=split or None, visible=bool(split)), downloads or None)


def _percent(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.0f}%"


def _interval(low: float, high: float) -> str:
    return "—" if not math.isfinite(low) else f"{100 * low:.0f}% to {100 * high:.0f}%"


def _disagreement_gallery(study_id: str, owner_key: str, result) -> list[tuple[str, str]]:
    """The pairs judges split on most: A's and B's image with the votes and file names (the owner's only)."""
    if not result.disagreements:
        return []
    store = _store()
    pairs = {pair.index: pair for pair in store.pairs(study_id, owner_key)}
    folder = store.study(study_id).folder
    items = []
    for item in result.disagreements:
        pair = pairs[item.pair]
        votes = f"A {item.a} · B {item.b} · tie {item.ties}"
        items += [(str(folder / f"{pair.a_token}.png"), f"pair {pair.index + 1} · A: {pair.a_name} ({votes})"),
                  (str(folder / f"{pair.b_token}.png"), f"pair {pair.index + 1} · B: {pair.b_name}")]
    return items


# ------------------------------------------------------------------------------------------ layout
def build(tab: gr.Tab | None = None, *, sets: list | None = None) -> None:
    """The "Judge by eye (blind)" sub-tab. sets: the Metrics / A-B tab's pickers, [(files, runs, folder)] for A,
    B and the reference: the judging takes the sets given there."""
    from pipelines.metrics.judging import MAX_PAIRS, QUESTIONS

    (files_a, runs_a, folder_a), (files_b, runs_b, folder_b), (files_ref, _, _) = sets or [(None,) * 3] * 3
    gr.Markdown(INTRO)
    gr.HTML('<div class="jd-keys"><span class="jd-last"></span></div>', js_on_load=KEYBOARD_JS,
            elem_id="jd-keyboard")
    with gr.Tabs():
        with gr.Tab("1 · Set up", id="jd-setup"):
            gr.Markdown("Uses **sets A and B given at the top of this tab**.")
            with gr.Row():
                name_a = gr.Textbox(label="Name of A (optional; hidden while judging)", elem_id="jd-name-a")
                name_b = gr.Textbox(label="Name of B (optional; hidden while judging)", elem_id="jd-name-b")
            pairing = gr.Radio(list(PAIRING), value=AUTO, label="Pairs",
                               info="How images of A and B are put side by side: by file name, by order, or at random",
                               elem_id="jd-pairing")
            with gr.Accordion("Question, reference, prompts and number of pairs", open=False):
                question = gr.Dropdown(list(QUESTIONS), value=QUESTIONS[0], allow_custom_value=True,
                                       label="Question shown with every pair (or write your own)",
                                       info="What judges are asked each time",
                                       elem_id="jd-question-choice")
                show_reference = gr.Checkbox(False, label="Show the reference images (given above) beside each "
                                                          "pair: the one with A's file name, else up to 3")
                prompts = gr.Textbox(lines=2, label="Prompt shown beside each pair (one for all, or one per "
                                                    "image of A)")
                pair_count = gr.Number(0, precision=0, minimum=0, maximum=MAX_PAIRS,
                                       label="Pairs to judge (0: automatic — every pair when paired by name or "
                                             "order, the larger set's size for random pairs)")
            create = gr.Button("Make the blind comparison", variant="primary", elem_id="jd-create")
            setup_message = gr.Markdown(elem_id="jd-setup-message")
        with gr.Tab("2 · Judge", id="jd-judge"):
            with gr.Row():
                comparison_id = gr.Textbox(label="Comparison id",
                                           info="The id of the comparison (it is in the link you were given)",
                                           scale=2, min_width=160, elem_id="jd-comparison")
                judge_name = gr.Textbox(label="Your name (optional)", scale=2, min_width=160,
                                        elem_id="jd-judge-name")
                start = gr.Button("Start judging", variant="primary", scale=1, min_width=120, elem_id="jd-start")
            with gr.Row():
                session_id = gr.Textbox(label="Your session id (to resume later)",
                                        info="Keep it to come back and go on where you left off",
                                        scale=4, min_width=160,
                                        elem_id="jd-session")
                resume = gr.Button("Resume", scale=1, min_width=100, elem_id="jd-resume")
            with gr.Column(visible=False, elem_id="jd-panel") as panel:
                question_text = gr.Markdown(elem_id="jd-question")
                progress_bar = gr.HTML(elem_id="jd-progress")
                notice = gr.Markdown(elem_id="jd-notice")
                references = gr.Gallery(label="Reference", columns=3, height=160, visible=False,
                                        allow_preview=False, elem_id="jd-reference")
                prompt_text = gr.Markdown(elem_id="jd-prompt")
                # Left and Right stay side by side on a phone (390 px): min_width 0 lets the columns shrink.
                with gr.Row(equal_height=False, elem_id="jd-pair") as pair_row:
                    with gr.Column(min_width=0):
                        left = gr.Image(label="Left", type="filepath", interactive=False, height=420,
                                        buttons=["fullscreen"], elem_id="jd-left-image")
                        left_button = gr.Button("◀ Left is better  (←)", elem_id="jd-left")
                    with gr.Column(min_width=0):
                        right = gr.Image(label="Right", type="filepath", interactive=False, height=420,
                                         buttons=["fullscreen"], elem_id="jd-right-image")
                        right_button = gr.Button("Right is better ▶  (→)", elem_id="jd-right")
                with gr.Row():
                    tie_button = gr.Button("Tie  (↓ / T)", min_width=80, elem_id="jd-tie")
                    skip_button = gr.Button("Skip  (S)", min_width=80, elem_id="jd-skip")
                    undo_button = gr.Button("Undo  (U / ⌫)", min_width=80, elem_id="jd-undo")
                status = gr.Markdown(elem_id="jd-status")
                gr.Markdown(KEYS)
            # The shown pair's position, sent with each answer from the page (so a second press answers the
            # pair it was meant for, or is ignored). Outside the panel: Gradio 6.31 shows a "hidden"
            # component again when the column around it is updated.
            position = gr.Number(visible="hidden", precision=0, elem_id="jd-position")
        with gr.Tab("3 · Results", id="jd-results"):
            with gr.Row():
                results_id = gr.Textbox(label="Comparison id",
                                        info="The id of the comparison (it is in the link you were given)",
                                        scale=2, min_width=160, elem_id="jd-results-id")
                owner_key = gr.Textbox(label="Owner key (the owner's; judges leave it empty)",
                                       info="The key the comparison's owner got when creating it; it shows the "
                                            "results",
                                       type="password",
                                       scale=2, min_width=160, elem_id="jd-owner-key")
            beside = gr.Dropdown(comparison_run_choices(), value="",
                                 label="Beside the metric rows of a comparison from History (optional)",
                                 info="Show the votes next to the scores of a metrics comparison")
            with gr.Row():
                results_button = gr.Button("Show results", variant="primary", elem_id="jd-show")
                close_button = gr.Button("Close the voting (owner)", variant="stop", elem_id="jd-close")
            verdict = gr.Markdown(elem_id="jd-verdict")
            table = gr.Dataframe(headers=TABLE_HEADERS, label="Verdict beside the metrics", wrap=True,
                                 interactive=False, column_widths=COLUMN_WIDTHS, elem_id="jd-table",
                                 elem_classes=["asl-results"])
            judges = gr.Dataframe(headers=JUDGE_HEADERS, label="Each judge", interactive=False, visible=False,
                                  elem_id="jd-judges")
            split = gr.Gallery(label="Pairs the judges disagreed on most (look at them again)", columns=4,
                               height=260, visible=False, elem_id="jd-split")
            downloads = gr.File(label="Every vote (CSV) and the whole judging (JSON) — the owner's",
                                file_count="multiple")

    view_outputs = [panel, session_id, question_text, progress_bar, notice, references, prompt_text, left, right,
                    pair_row, position, status, setup_message, comparison_id, results_id]
    quick = {"show_progress": "hidden", "concurrency_limit": 4, **keeps_results(status)}
    set_inputs = [files_a, runs_a, folder_a, files_b, runs_b, folder_b]
    missing = [component for component in set_inputs if component is None]
    if missing:
        raise ValueError("The judging sub-tab takes its sets from the Metrics / A-B tab's pickers.")
    create.click(friendly_errors(create_comparison),
                 inputs=[files_a, runs_a, folder_a, name_a, files_b, runs_b, folder_b, name_b, files_ref,
                         show_reference, prompts, question, pairing, pair_count],
                 outputs=[setup_message, comparison_id, results_id, owner_key, files_a, runs_a, folder_a, name_a,
                          files_b, runs_b, folder_b, name_b],
                 api_name="judge_create", **keeps_results(setup_message))
    start.click(friendly_errors(start_judging), inputs=[comparison_id, judge_name], outputs=view_outputs,
                api_name="judge_start", **keeps_results(status)).then(None, inputs=session_id, js=REMEMBER_JS)
    resume.click(friendly_errors(resume_judging), inputs=session_id, outputs=view_outputs,
                 api_name="judge_resume", **keeps_results(status)).then(None, inputs=session_id, js=REMEMBER_JS)
    for button, answer in ((left_button, "left"), (right_button, "right"), (tie_button, "tie"),
                           (skip_button, "skip")):
        button.click(friendly_errors(_answer(answer)), inputs=[session_id, position], outputs=view_outputs,
                     api_name=f"judge_{answer}", **quick)
    undo_button.click(friendly_errors(undo_vote), inputs=session_id, outputs=view_outputs, api_name="judge_undo",
                      **quick)
    results_button.click(friendly_errors(show_results), inputs=[results_id, owner_key, beside],
                         outputs=[verdict, table, judges, split, downloads], api_name="judge_results",
                         **keeps_results(verdict))
    close_button.click(friendly_errors(close_comparison), inputs=[results_id, owner_key], outputs=verdict,
                       api_name="judge_close")
    comparison_id.change(lambda value: value, inputs=comparison_id, outputs=results_id, api_visibility="private")
    if tab is not None:  # comparisons made since start-up appear when the tab is opened
        tab.select(lambda: gr.Dropdown(choices=comparison_run_choices()), outputs=beside, api_visibility="private")
