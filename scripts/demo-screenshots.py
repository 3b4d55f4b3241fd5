"""Screenshots of the demo for docs/, taken the way a new user sees it.

Start the main job first (`make run`, or `.venv/bin/openvlthinker up --run-dir runs/up`), then:

    .venv/bin/python scripts/demo-screenshots.py --run-dir runs/up

Headless Chromium (Debian's, by path, as in tests/demo/test_browser.py; with an emoji font, e.g.
`apt-get install fonts-noto-color-emoji`, or the 👍 labels draw as boxes) asks the counting example
with its image, opens the thinking and saves docs/demo.png; rates that answer 👍 and 5 stars and
saves docs/demo-feedback.png; then asks and rates the examples, each in a new chat, `--ratings`
times in all, waits for the RL loop's rounds (one per 8 ratings), refreshes *Served versions* and
saves docs/demo-promotion.png. Whether a round is promoted is the gate's decision, and on the tiny
model it mostly keeps a round out (`keep` in RUN_DIR/rl.log). Then `--promote-by-hand` promotes the
newest loaded version as an operator would (`POST /v1/adapters/promote`) before the last screenshot;
without it the script says that nothing was promoted (exit code 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIRST = "How many more squares than triangles are there?"  # the counting example: it thinks before answering


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default="runs/up", help="the main job's folder (its admin.key is read)")
    p.add_argument("--demo", default="http://127.0.0.1:7860")
    p.add_argument("--api", default="http://127.0.0.1:8000")
    p.add_argument("--out", default=str(REPO / "docs"))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--ratings", type=int, default=16, help="answers to rate in all (the loop trains per 8)")
    p.add_argument("--wait-s", type=float, default=600, help="how long to wait for the loop's rounds after them")
    p.add_argument("--promote-by-hand", action="store_true",
                   help="if the gate promoted nothing, promote the newest loaded version through the admin API")
    return p.parse_args(argv)


class Admin:
    """The gateway's admin API with the job's admin key: the promoted version, a stored interaction."""

    def __init__(self, api: str, run_dir: Path):
        self.url = f"{api.rstrip('/')}/v1"
        self.headers = {"Authorization": f"Bearer {(run_dir / 'admin.key').read_text().strip()}"}

    def get(self, path: str) -> dict:
        r = httpx.get(f"{self.url}{path}", headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json()

    def promoted(self) -> str | None:
        return self.get("/adapters").get("promoted")

    def versions(self) -> list[dict]:
        return self.get("/adapters")["data"]

    def promote(self, version: str) -> None:
        r = httpx.post(f"{self.url}/adapters/promote", json={"version": version}, headers=self.headers, timeout=60)
        r.raise_for_status()

    def thinking(self, interaction_id: str) -> str:
        return self.get(f"/interactions/{interaction_id}")["data"][0]["thinking"] or ""


def ask(page, example) -> str:
    """Click an example in a new chat (one image per interaction) and wait for its answer; its interaction id."""
    import re

    from playwright.sync_api import expect

    page.get_by_role("button", name="New chat").click()
    expect(page.locator("#chat").get_by_text("answered by")).to_have_count(0, timeout=30_000)
    example.click()
    footer = page.locator("#chat").get_by_text("answered by")
    expect(footer).to_have_count(1, timeout=180_000)
    page.wait_for_timeout(1000)  # the last redraw of the finished answer
    return re.search(r"\bid (chatcmpl-[0-9a-z]+)", footer.inner_text()).group(1)


def like(page, interaction_id: str) -> None:
    """👍 with the chat's own button (a click that lands while Gradio redraws is lost: then again)."""
    from playwright.sync_api import expect

    chat = page.locator("#chat")
    for _ in range(3):
        chat.locator('button[aria-label="Like"]').last.click()
        try:
            expect(page.locator("#feedback-status")).to_contain_text(interaction_id, timeout=10_000)
            return
        except AssertionError:
            continue
    raise RuntimeError(f"the 👍 on {interaction_id} did not reach the gateway")


def rounds_logged(metrics: Path) -> int:
    return len(metrics.read_text().splitlines()) if metrics.is_file() else 0


def shoot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"saved {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import expect, sync_playwright

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    admin = Admin(args.api, Path(args.run_dir))
    metrics = Path(args.run_dir) / "rl" / "metrics.jsonl"  # a line per finished round (gate included)
    before, finished = admin.promoted(), rounds_logged(metrics)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(args.demo)
            page.locator("#ask textarea").wait_for(timeout=60_000)
            examples = page.locator("button.gallery-item")  # Gradio's example buttons
            expect(examples.first).to_be_visible(timeout=30_000)

            # 1. A question with an image: the answer, and the thinking opened.
            first = ask(page, page.get_by_text(FIRST).first)
            thought = page.locator("#chat").get_by_text(admin.thinking(first).strip()[:20])
            for _ in range(3):  # closed once the answer starts; a click during a redraw is lost
                if thought.count() and thought.first.is_visible():
                    break
                page.locator("#chat").get_by_text("Thinking").first.click()
                page.wait_for_timeout(500)
            expect(thought.first).to_be_visible()
            shoot(page, out / "demo.png")

            # 2. Feedback on it: 👍 in the chat, then five stars from the panel.
            like(page, first)
            page.locator("#feedback-stars").get_by_text("5").click()
            page.locator("#feedback-send").click()
            expect(page.locator("#feedback-status")).to_contain_text("★★★★★", timeout=30_000)
            shoot(page, out / "demo-feedback.png")

            # 3. More rated answers; the loop trains a round per 8 of them and gates it.
            for k in range(1, args.ratings):
                like(page, ask(page, examples.nth(k % examples.count())))
            rounds, deadline = finished + args.ratings // 8, time.monotonic() + args.wait_s
            while (admin.promoted() in (None, before) and rounds_logged(metrics) < rounds
                   and time.monotonic() < deadline):
                time.sleep(5)
            promoted, by_hand = admin.promoted(), False
            loaded = [v["version"] for v in admin.versions() if v["loaded"]]
            if promoted in (None, before) and args.promote_by_hand and loaded:
                admin.promote(loaded[-1])
                promoted, by_hand = loaded[-1], True
            page.get_by_role("button", name="Refresh").click()
            if promoted not in (None, before):
                expect(page.locator("#versions")).to_contain_text(promoted, timeout=30_000)
            page.locator("#versions").scroll_into_view_if_needed()
            shoot(page, out / "demo-promotion.png")
        finally:
            browser.close()
    if promoted in (None, before):
        print(f"the gate promoted no version (see {args.run_dir}/rl.log)", file=sys.stderr)
        return 1
    print(f"promoted: {promoted}" + (" (by hand: the gate kept every round out)" if by_hand else " (by the gate)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
