"""Screenshots of the Prefect UI with headless Chromium: a deployment's run form, a run's artifacts.

Plain Chromium command-line flags, no browser driver: `--dump-dom` prints the DOM of the
custom-run form once the single-page app has rendered it (what a test checks), `--screenshot`
saves a PNG of it and of a finished flow run's Artifacts tab. `--virtual-time-budget` lets the
app load its data before the page is captured; each Chromium is killed if it hangs.

The pages are those of the UI the server sends a browser to by default (`/ui-settings` says
which: the React UI under /v2 in Prefect 3.9, or the classic Vue UI at /; both use the same
routes):

    <ui>/deployments/deployment/<deployment id>/run     the custom-run form
    <ui>/runs/flow-run/<flow run id>?tab=Artifacts      the flow run's Artifacts tab

Usage, against a server whose UI has PREFECT_UI_API_URL pointing at its API:

    python scripts/prefect_ui_screenshots.py http://127.0.0.1:4200 \\
        --deployment-id <uuid> --flow-run-id <uuid> --out docs/

Chromium is `chromium` on PATH (the Debian package) unless --chromium or $CHROMIUM says
otherwise. It runs with --no-sandbox (needed as root in a container) and a fresh, throwaway
profile each time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

FORM_WINDOW = (1280, 1600)  # the form is long: image, text, model and the first two stages
ARTIFACTS_WINDOW = (1280, 900)  # the run's header, its graph and the artifact cards
VIRTUAL_TIME_BUDGET_MS = 15_000
TIMEOUT_S = 120.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--run-all-compositor-stages-before-draw",
)
FORM_PNG = "prefect-run-form.png"
FORM_HTML = "prefect-run-form.html"
ARTIFACTS_PNG = "prefect-run-artifacts.png"
ARTIFACTS_HTML = "prefect-run-artifacts.html"


class ChromiumError(RuntimeError):
    """Chromium failed, timed out or did not write what it was asked for."""


@dataclass(frozen=True)
class Screenshots:
    form_png: Path  # the deployment's custom-run form
    form_html: Path  # the same page's DOM, as rendered
    artifacts_png: Path  # the flow run's Artifacts tab
    artifacts_html: Path  # the same page's DOM, as rendered
    form_dom: str  # the text of form_html
    artifacts_dom: str  # the text of artifacts_html

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.form_png, self.form_html, self.artifacts_png, self.artifacts_html)


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium binary: `explicit`, else $CHROMIUM, else `chromium` (or Chrome) on PATH."""
    for candidate in (explicit, os.environ.get("CHROMIUM"), "chromium", "chromium-browser",
                      "google-chrome"):  # fmt: skip
        if candidate and (found := shutil.which(candidate)):
            return found
    raise ChromiumError("no Chromium found: install it (apt-get install chromium) or set CHROMIUM")


def ui_base_url(server_url: str, ui: str | None = None, timeout: float = 10.0) -> str:
    """The UI's base URL: `ui` ("v1" or "v2") or the server's default, from its /ui-settings."""
    server_url = server_url.rstrip("/")
    with urllib.request.urlopen(f"{server_url}/ui-settings", timeout=timeout) as response:
        settings = json.load(response)
    version = ui or settings.get("default_ui") or "v1"
    base = settings.get(f"{version}_base_url")
    if base is None:
        raise ValueError(f"the server at {server_url} serves no {version} UI: {settings}")
    return server_url + ("" if base == "/" else base.rstrip("/"))


def run_form_url(ui_url: str, deployment_id: str) -> str:
    return f"{ui_url}/deployments/deployment/{deployment_id}/run"


def artifacts_url(ui_url: str, flow_run_id: str) -> str:
    return f"{ui_url}/runs/flow-run/{flow_run_id}?tab=Artifacts"


def chromium(
    url: str,
    action: list[str],
    *,
    binary: str,
    window: tuple[int, int] = FORM_WINDOW,
    budget_ms: int = VIRTUAL_TIME_BUDGET_MS,
    timeout: float = TIMEOUT_S,
) -> str:
    """Run one headless Chromium on `url` with `action` (e.g. ["--dump-dom"]); return stdout.

    Chromium runs in its own process group with a new empty profile; the whole group is
    killed when it outlives `timeout` seconds (and after it exits, for any stray child).
    """
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}", f"--virtual-time-budget={budget_ms}",
            *action, url,
        ]  # fmt: skip
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.communicate()
            raise ChromiumError(f"chromium on {url} took more than {timeout} s; killed") from None
        finally:
            _kill_group(process.pid)
    if process.returncode != 0:
        raise ChromiumError(
            f"chromium on {url} exited with {process.returncode}:\n{stderr[-3000:]}"
        )
    return stdout


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def screenshot(url: str, path: Path, *, binary: str, **options) -> Path:
    """Save a PNG of `url` as rendered at the end of the virtual time budget."""
    path.unlink(missing_ok=True)
    chromium(url, [f"--screenshot={Path(path).resolve()}"], binary=binary, **options)
    if not path.is_file():
        raise ChromiumError(f"chromium wrote no screenshot of {url} to {path}")
    return path


def dump_dom(url: str, *, binary: str, **options) -> str:
    """The DOM of `url` (document.documentElement.outerHTML) at the end of the time budget."""
    dom = chromium(url, ["--dump-dom"], binary=binary, **options)
    if "<html" not in dom.lower():
        raise ChromiumError(f"chromium dumped no DOM for {url}: {dom[:200]!r}")
    return dom


def capture(
    server_url: str,
    deployment_id: str,
    flow_run_id: str,
    out_dir: Path,
    *,
    ui: str | None = None,
    binary: str | None = None,
    budget_ms: int = VIRTUAL_TIME_BUDGET_MS,
    timeout: float = TIMEOUT_S,
) -> Screenshots:
    """Capture the run form of `deployment_id` and the Artifacts tab of `flow_run_id`.

    Writes prefect-run-form.{png,html} and prefect-run-artifacts.{png,html} to `out_dir` (the
    DOM is dumped by a Chromium of its own, the same way the screenshot is taken). `server_url`
    is the server's base URL, the UI's, e.g. http://127.0.0.1:4200.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {"binary": find_chromium(binary), "budget_ms": budget_ms, "timeout": timeout}
    ui_url = ui_base_url(server_url, ui)
    form_url = run_form_url(ui_url, str(deployment_id))
    form_dom = _save_dom(form_url, out_dir / FORM_HTML, window=FORM_WINDOW, **options)
    form_png = screenshot(form_url, out_dir / FORM_PNG, window=FORM_WINDOW, **options)
    run_url = artifacts_url(ui_url, str(flow_run_id))
    run_dom = _save_dom(run_url, out_dir / ARTIFACTS_HTML, window=ARTIFACTS_WINDOW, **options)
    run_png = screenshot(run_url, out_dir / ARTIFACTS_PNG, window=ARTIFACTS_WINDOW, **options)
    return Screenshots(
        form_png, out_dir / FORM_HTML, run_png, out_dir / ARTIFACTS_HTML, form_dom, run_dom
    )


def _save_dom(url: str, path: Path, **options) -> str:
    dom = dump_dom(url, **options)
    path.write_text(dom, encoding="utf-8")
    return dom


def page_text(dom: str) -> list[str]:
    """The text of a dumped DOM, piece by piece (whitespace-trimmed), without scripts and styles."""
    return [text for kind, text in _walk(dom) if kind == "text"]


def labels(dom: str) -> list[str]:
    """The texts of the <label> elements of a dumped DOM: the field names of a form."""
    return [text for kind, text in _walk(dom) if kind == "label"]


def _walk(dom: str) -> list[tuple[str, str]]:
    class Walker(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[tuple[str, str]] = []
            self.skip = 0
            self.label: list[str] | None = None

        def handle_starttag(self, tag: str, attrs) -> None:
            if tag in ("script", "style"):
                self.skip += 1
            elif tag == "label":
                self.label = []

        def handle_endtag(self, tag: str) -> None:
            if tag in ("script", "style"):
                self.skip = max(0, self.skip - 1)
            elif tag == "label" and self.label is not None:
                self.found.append(("label", " ".join(" ".join(self.label).split())))
                self.label = None

        def handle_data(self, data: str) -> None:
            if self.skip or not data.strip():
                return
            self.found.append(("text", data.strip()))
            if self.label is not None:
                self.label.append(data)

    walker = Walker()
    walker.feed(dom)
    walker.close()
    return walker.found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "server_url", help="the Prefect server's base URL, e.g. http://127.0.0.1:4200"
    )
    parser.add_argument("--deployment-id", required=True, help="whose custom-run form to capture")
    parser.add_argument("--flow-run-id", required=True, help="whose Artifacts tab to capture")
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder")
    parser.add_argument("--ui", choices=("v1", "v2"), help="which UI (default: the server's)")
    parser.add_argument("--chromium", help="the Chromium binary (default: $CHROMIUM, chromium)")
    parser.add_argument("--budget-ms", type=int, default=VIRTUAL_TIME_BUDGET_MS,
                        help="virtual time the page gets to render, in ms")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help="kill Chromium after this many seconds")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        shots = capture(
            args.server_url, args.deployment_id, args.flow_run_id, args.out, ui=args.ui,
            binary=args.chromium, budget_ms=args.budget_ms, timeout=args.timeout,
        )  # fmt: skip
    except (ChromiumError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in shots.paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
