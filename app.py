"""Anime Style Lab: builds the Gradio app from the tab registry, reads settings, launches.

Settings come from flags or environment variables (flags win):
  --host / GRADIO_SERVER_NAME (default 127.0.0.1)   --port / GRADIO_SERVER_PORT (default 7860)
  --outputs / ASL_OUTPUTS     --device / ASL_DEVICE  --dtype / ASL_DTYPE   --offline (sets HF_HUB_OFFLINE=1)
  --auth-file FILE / ASL_AUTH="user:password[,user2:password2]"  (basic auth; a file holds one pair a line)
  --multi-user / --single-user / ASL_MULTI_USER=1|0  (default: multi-user on a Hugging Face Space, where SPACE_ID
  is set; each visitor then sees only their own work — see pipelines/core/owners.py and the README)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

# Before gradio or huggingface_hub are imported: no analytics, version checks or telemetry at start-up.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DISABLE_TELEMETRY", "1")
# A Space with persistent storage keeps the model hub's downloads there, so they happen once across restarts.
if os.environ.get("SPACE_ID") and os.path.isdir("/data") and os.access("/data", os.W_OK):
    os.environ.setdefault("HF_HOME", "/data/huggingface")

TITLE = "Anime Style Lab"
INTRO = ("Research methods for anime and animation-style images, as tools you can use in the browser. "
         "Every result is saved with its settings; see **History**. **About** explains each method.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--outputs", default=os.environ.get("ASL_OUTPUTS"), help="folder for images and records")
    parser.add_argument("--device", default=os.environ.get("ASL_DEVICE"), help="cuda, mps or cpu")
    parser.add_argument("--dtype", default=os.environ.get("ASL_DTYPE"), help="fp16, bf16 or fp32")
    parser.add_argument("--auth-file", default=os.environ.get("ASL_AUTH_FILE"), help="user:password per line")
    parser.add_argument("--offline", action="store_true", help="never contact the model hub")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--multi-user", dest="multi_user", action="store_true", default=None,
                      help="keep each visitor's work apart (the default on a Hugging Face Space)")
    mode.add_argument("--single-user", dest="multi_user", action="store_false",
                      help="one user: everything visible (the default elsewhere)")
    return parser.parse_args(argv)


def apply_settings(args: argparse.Namespace) -> None:
    """Flags become environment variables, which the pipelines' core reads."""
    for flag, name in (("outputs", "ASL_OUTPUTS"), ("device", "ASL_DEVICE"), ("dtype", "ASL_DTYPE")):
        if getattr(args, flag):
            os.environ[name] = str(getattr(args, flag))
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    if args.multi_user is not None:
        os.environ["ASL_MULTI_USER"] = "1" if args.multi_user else "0"


def read_auth(auth_file: str | None) -> list[tuple[str, str]] | None:
    """Basic-auth pairs from ASL_AUTH or a file; None when neither is set (no login)."""
    text = Path(auth_file).read_text() if auth_file else os.environ.get("ASL_AUTH", "")
    pairs = []
    for item in text.replace(",", "\n").splitlines():
        user, sep, password = item.strip().partition(":")
        if item.strip() and (not sep or not user or not password):
            raise SystemExit("Auth entries must look like user:password")
        if sep:
            pairs.append((user, password))
    return pairs or None


def build_app():
    import gradio as gr

    from pipelines.core import owners
    from tabs import TABS, start, visitors
    from tabs.common import status_banner_markdown

    # Lists built now (trained models, runs) belong to no visitor: on a multi-user server they start with the
    # shared entries only, and each page fills in its visitor's own when it loads (tabs.visitors.owned_list).
    # On a shared server Gradio's own cache (uploads, returned files) is emptied of files older than a day, hourly.
    delete_cache = (3600, 86400) if owners.multi_user() else None
    with owners.acting_as(owners.Owner("session", "page-build")), \
            gr.Blocks(title=TITLE, delete_cache=delete_cache) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        banner = gr.Markdown(elem_id="status-banner")
        built = {}
        with gr.Tabs(elem_id="asl-tabs") as tabs:
            for spec in TABS:
                tab_id = spec.module.rsplit(".", 1)[-1]
                with gr.Tab(spec.title, id=tab_id) as tab:
                    importlib.import_module(spec.module).build(tab)
                built[tab_id] = tab
        start.connect(tabs, built)  # the Start page's "Try it" buttons fill in and run other tabs
        visitors.install(demo)
        demo.asl_visitor_loaded.then(status_banner_markdown, outputs=banner, api_visibility="private")
    visitors.check_storage_before_model_work(demo)
    # One model job at a time: models are large and share one device.
    demo.queue(default_concurrency_limit=1)
    visitors.after_queue(demo)
    return demo


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    apply_settings(args)
    demo = build_app()
    from tabs.common import app_theme
    from tabs.visitors import launch_options

    demo.launch(server_name=args.host, server_port=args.port, auth=read_auth(args.auth_file),
                ssr_mode=False, show_error=False, theme=app_theme(), **launch_options())


if __name__ == "__main__":
    sys.exit(main())
