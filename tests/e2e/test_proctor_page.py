"""The proctor page in a real browser (Debian's Chromium, headless, driven by Playwright;
nothing downloaded) against ``chaosrun serve`` running a real exam on the test sshd: the
login form, the grid filling in as steps end, a repair showing as points after a verify, a
suspect candidate marked, the filters, the detail view, a proctor without the operator's
buttons, and a room of 500 candidates that renders only what is on screen.

Screenshots of each stage go to ``artifacts/proctor/`` (docs/proctor.png is one of them).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import REPO, Exam
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from server_support import Server, serving
from test_server import ENVS, _exam_text

ARTIFACTS = REPO / "artifacts" / "proctor"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def server(exam: Exam, tmp_path: Path) -> Iterator[Server]:
    yield from serving(tmp_path)


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


def _login(page: Page, server: Server, token: str) -> None:
    page.goto(server.url + "/")
    page.fill("input#token", token)
    page.locator("form#login").evaluate("f => f.requestSubmit()")


def _row(page: Page, env: str) -> Locator:
    return page.locator(f'div.row[data-env="{env}"]')


def test_the_page_follows_a_real_exam_live(browser: Browser, server: Server, exam: Exam) -> None:
    with server.client() as http:
        created = http.post("/v1/exams", json=_exam_text(exam, pause=0.5))
        assert created.status_code == 201, created.text
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(server.url + "/")
    page.fill("input#token", "chr_wrong")
    page.locator("form#login").evaluate("f => f.requestSubmit()")
    expect(page.locator("#login-error")).to_contain_text("not accepted")
    _shot(page, "1-login")

    _login(page, server, server.operator)
    expect(page.locator("#whoami")).to_have_text("olga (operator)")
    for env in ENVS:
        expect(_row(page, env)).to_be_visible()
    expect(page.locator("#count-total")).to_have_text("3")

    # the operator's button starts the chaos; the grid fills in as steps end
    page.click("#run-all")
    for env in ENVS:
        expect(page.locator(f'div.row[data-env="{env}"] .cell[data-step="pause"]')).to_have_attribute(
            "data-status", "ok", timeout=60_000
        )
    expect(page.locator("#count-done")).to_have_text("3", timeout=30_000)
    _shot(page, "2-run")

    # cand-001 repairs; a verify shows it as points, cand-002 as suspect
    (exam.sandbox / "cand-001" / "key").chmod(0o644)
    page.click("#verify-all")
    expect(page.locator('div.row[data-env="cand-001"] .points')).to_have_text("3 / 3", timeout=60_000)
    expect(page.locator('div.row[data-env="cand-001"] .cell[data-step="key"]')).to_have_attribute("data-status", "ok")
    expect(page.locator('div.row[data-env="cand-003"] .cell[data-step="key"]')).to_have_attribute(
        "data-status", "failed"
    )
    expect(page.locator('div.row[data-env="cand-002"]')).to_have_class(re.compile(r"\bsuspect\b"))
    expect(page.locator("#count-suspect")).to_have_text("1")
    _shot(page, "3-verified")
    shutil.copy(ARTIFACTS / "3-verified.png", ARTIFACTS / "readme.png")

    # filters: suspect only, then a name
    page.check("input#suspect-only")
    expect(page.locator("div.row")).to_have_count(1)
    expect(page.locator('div.row[data-env="cand-002"]')).to_be_visible()
    page.uncheck("input#suspect-only")
    page.fill("input#filter", "003")
    expect(page.locator("div.row")).to_have_count(1)
    page.fill("input#filter", "")
    expect(page.locator("div.row")).to_have_count(3)

    # a candidate's detail: its step log, observed values and audit excerpt
    page.click('div.row[data-env="cand-002"]')
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-name")).to_contain_text("cand-002")
    expect(page.locator("#detail-steps")).to_contain_text("honest")
    expect(page.locator("#detail-audit")).to_contain_text("step_end")
    expect(page.locator("#detail-log")).to_contain_text("integrity suspect")
    expect(page.locator("#detail")).to_contain_text("binary_stopped")  # the signal, in full
    _shot(page, "4-detail")
    page.click("#detail-close")
    expect(page.locator("#detail")).to_be_hidden()

    # a proctor (kiosk link) sees the same room, without the operator's buttons
    kiosk = browser.new_page(viewport={"width": 1400, "height": 800})
    kiosk.goto(f"{server.url}/?token={server.proctor}")
    expect(kiosk.locator("#whoami")).to_have_text("pete (proctor)")
    assert "token=" not in kiosk.url  # taken out of the address bar
    expect(kiosk.locator('div.row[data-env="cand-001"] .points')).to_have_text("3 / 3")
    expect(kiosk.locator("#run-all")).to_be_hidden()
    expect(kiosk.locator("#verify-all")).to_be_hidden()
    kiosk.close()
    assert errors == []
    page.close()
    with server.client() as http:  # the machines back as they were
        exam_id = http.get("/v1/exams").json()["exams"][0]["id"]
        restore = http.post(f"/v1/exams/{exam_id}/restore", json={})
        assert server.wait(exam_id, restore.json()["id"])["state"] == "done"


ROOM = """\
version: 1
name: room-of-500
targets:
  web: {host: 127.0.0.1}
verify:
  - {id: up, target: web, probe: file_exists, with: {path: "%(root)s/up"}, expect: true, points: 1}
"""


def test_a_room_of_500_candidates_renders_only_what_is_on_screen(browser: Browser, server: Server, exam: Exam) -> None:
    (exam.sandbox / "up").write_text("")
    envs = [f"cand-{i:03d}" for i in range(500)]
    inventory = exam.inventory(["web"], envs=envs)
    with server.client() as http:
        created = http.post(
            "/v1/exams", json={"scenario": ROOM % {"root": exam.sandbox}, "inventory": inventory.read_text()}
        )
        assert created.status_code == 201, created.text
        exam_id = created.json()["id"]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    _login(page, server, server.operator)
    expect(page.locator("#count-total")).to_have_text("500")
    with server.client() as http:
        op = http.post(f"/v1/exams/{exam_id}/verify", json={}).json()
    # live: the done count climbs while the verify runs, and ends at 500
    expect(page.locator("#count-done")).not_to_have_text("0", timeout=60_000)
    server.wait(exam_id, op["id"], timeout=300)
    expect(page.locator("#count-done")).to_have_text("500", timeout=30_000)
    rendered = page.locator("div.row").count()
    assert 10 <= rendered < 100, rendered  # virtualized: the rows on screen and a few more
    page.locator("#grid").evaluate("g => { g.scrollTop = g.scrollHeight; }")
    expect(page.locator('div.row[data-env="cand-499"]')).to_be_visible()
    expect(page.locator('div.row[data-env="cand-499"] .points')).to_have_text("1 / 1")
    assert page.locator("div.row").count() < 100
    _shot(page, "5-room-of-500")
    page.close()
