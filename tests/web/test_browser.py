"""A real headless Chromium (Debian's, driven by Playwright) through the page a list owner uses.

Screenshots of each step land in the test's tmp dir; with
SMTPGUARD_SCREENSHOTS=docs/screenshots a few are also copied there (README).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .conftest import PASSWORD, Page

if TYPE_CHECKING:
    from playwright.sync_api import Browser
    from playwright.sync_api import Page as Tab

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "fr_semicolon_bom.csv"
FOR_README = {"02-blocked-why", "04-import-counts", "06-activity-fr", "07-phone"}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium: run scripts/install-browser.sh (as root)"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install -e '.[test]')")


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield b
        b.close()


class Shots:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.readme = Path(os.environ["SMTPGUARD_SCREENSHOTS"]) if os.environ.get("SMTPGUARD_SCREENSHOTS") else None

    def take(self, tab: Tab, name: str) -> None:
        path = self.folder / f"{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        if self.readme is not None and name in FOR_README:
            self.readme.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.readme / path.name)


def test_a_list_owner_in_the_browser(page: Page, browser: Browser, tmp_path: Path) -> None:
    shots = Shots(tmp_path)
    context = browser.new_context(viewport={"width": 1000, "height": 700}, locale="en-GB")
    tab = context.new_page()
    expect = sync_api.expect

    # sign in
    tab.goto(f"{page.url}/")
    expect(tab.locator("h1")).to_have_text("Sign in")
    tab.fill("input[name=name]", "ed")
    tab.fill("input[name=password]", PASSWORD)
    shots.take(tab, "01-sign-in")
    tab.click("button:has-text('Sign in')")
    expect(tab.locator(".who")).to_contain_text("ed · editor")

    # search a blocked address and read why
    tab.fill("input[name=q]", "Jane.Doe@Example.com")
    tab.click("button:has-text('Check')")
    verdict = tab.locator("#verdict")
    expect(verdict).to_contain_text("Blocked")
    expect(verdict.locator("dd").nth(0)).to_have_text("jane.doe@example.com")
    expect(verdict.locator("dd").nth(1)).to_have_text("crm")
    expect(verdict.locator("dd").nth(2)).to_have_text("unsubscribed 2026-11-02")
    shots.take(tab, "02-blocked-why")

    # import a French semicolon CSV: detection and preview, then the counts
    tab.click("nav >> text=Import")
    tab.set_input_files("input[type=file]", str(FIXTURE))
    tab.click("button:has-text('Look at the file')")
    expect(tab.locator("#encoding")).to_have_text("utf-8-sig")
    expect(tab.locator("#delimiter")).to_have_text("semicolon ;")
    expect(tab.locator("#column")).to_have_text("Adresse e-mail")
    expect(tab.locator("table.preview tbody tr")).to_have_count(5)
    expect(tab.locator("table.preview")).to_contain_text("jean.dupont@orange.fr")
    shots.take(tab, "03-import-preview")
    tab.click("button:has-text('Import into the list')")
    expect(tab.locator("#count-rows")).to_have_text("20", timeout=20_000)
    expect(tab.locator("#count-added")).to_have_text("19")
    expect(tab.locator("#count-duplicates")).to_have_text("1")
    expect(tab.locator("#count-invalid")).to_have_text("0")
    shots.take(tab, "04-import-counts")

    # a re-subscribed contact removed in two clicks with a confirmation
    tab.click("nav >> text=List")
    tab.fill("input[name=q]", "paul.resub@example.com")
    tab.press("input[name=q]", "Enter")
    tab.click("#verdict >> text=Remove")  # click 1
    expect(tab.locator("main")).to_contain_text("Remove paul.resub@example.com from the list?")
    tab.click("button:has-text('Yes, remove')")  # click 2
    expect(tab.locator(".note")).to_contain_text("Removed: paul.resub@example.com")
    expect(tab.locator("#verdict")).to_contain_text("Not blocked")
    shots.take(tab, "05-removed")

    # filter the activity by person
    tab.click("nav >> text=Activity")
    tab.fill("input[name=person]", "bob")
    tab.click("button:has-text('Filter')")
    expect(tab.locator("#total")).to_have_text("2")
    expect(tab.locator("#events tbody tr")).to_have_count(2)
    expect(tab.locator("#events")).not_to_contain_text("alice@corp.example")
    expect(tab.locator("svg.chart rect")).to_have_count(2)

    # switch to French
    tab.click("a.lang:has-text('FR')")
    expect(tab.locator("h1")).to_have_text("Activité")
    expect(tab.locator("#events")).to_contain_text("surveillé")
    expect(tab.locator("input[name=person]")).to_have_value("bob")  # the filter survived the switch
    shots.take(tab, "06-activity-fr")

    # a phone screen: no sideways scrolling of the page itself
    signed_in = context.storage_state()
    phone = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True, storage_state=signed_in)
    small = phone.new_page()
    small.goto(f"{page.url}/?q=jean.dupont@orange.fr")
    expect(small.locator("#verdict")).to_contain_text("Bloquée")
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    shots.take(small, "07-phone")
    phone.close()
    context.close()
