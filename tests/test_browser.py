"""The admin in a real browser: Chromium, driven by Selenium, against the live server.

A person's way through the admin: log in through the login form, filter the
list to pending functions, cancel one with the action, schedule a function
with the form, watch it succeed after a worker burst, and cancel one from its
detail page.

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/install-browser``
installs them); nothing is downloaded at run time, Selenium Manager included.
Without them the tests are skipped, unless ``CONVEX_REQUIRE_BROWSER=1`` (as CI
sets it) turns that into a failure.

Every step leaves a screenshot in ``test-artifacts/browser/``. With
``CONVEX_UPDATE_SCREENSHOTS=1`` the changelist, a detail page and the schedule
form are also written to ``docs/_static/`` for ``docs/admin.rst``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction, State
from convex_scheduler.testing import run_due

from . import functions
from .models import Counter

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REQUIRE_BROWSER = os.environ.get("CONVEX_REQUIRE_BROWSER") == "1"
UPDATE_SCREENSHOTS = os.environ.get("CONVEX_UPDATE_SCREENSHOTS") == "1"

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
DOCS_STATIC = ROOT / "docs" / "_static"

#: Seconds an explicit wait allows a page or element before the test fails.
WAIT = 20
USERNAME = "admin"
PASSWORD = "browser-test-password"
HOUR_MS = 3_600_000
CHANGELIST = reverse("admin:convex_scheduler_scheduledfunction_changelist")
ADD = reverse("admin:convex_scheduler_scheduledfunction_add")
REFUSED_PAGE = re.compile(
    r"/admin/\S* - Failed to load resource: the server responded with a status of 40[03] "
)


def _missing_browser() -> list[str]:
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]


def _missing_reason() -> str:
    missing = " and ".join(_missing_browser())
    return f"the browser tests need {missing}: run scripts/install-browser"


try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - selenium is in requirements-dev.txt
    webdriver = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        webdriver is None and not REQUIRE_BROWSER, reason="the browser tests need selenium"
    ),
    pytest.mark.skipif(
        bool(_missing_browser()) and not REQUIRE_BROWSER,
        reason=_missing_reason() if _missing_browser() else "",
    ),
]


def chrome_options(profile: str) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-features=Translate,MediaRouter,OptimizationHints",
        "--password-store=basic",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--lang=en-US",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


class Browser:
    """A Chromium window on the live server, with the waits a test needs."""

    def __init__(self, driver, live_server_url: str, name: str) -> None:
        self.driver = driver
        self.base = live_server_url
        self.name = name
        self.steps = 0

    # Navigation.

    def get(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.wait_ready()

    def click_and_load(self, element: WebElement) -> None:
        """Click something that loads a new page, and wait until that page is ready."""
        old_page = self.driver.find_element(By.TAG_NAME, "html")
        element.click()
        self.wait(EC.staleness_of(old_page), "a new page to replace the old one")
        self.wait_ready()

    def reload(self) -> None:
        old_page = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.refresh()
        self.wait(EC.staleness_of(old_page), "the page to reload")
        self.wait_ready()

    def wait_ready(self) -> None:
        self.wait(
            lambda driver: driver.execute_script("return document.readyState") == "complete",
            "the page to finish loading",
        )

    def hide_nav_sidebar(self) -> None:
        """Fold the admin's navigation sidebar away (remembered for this browser)."""
        self.element("#toggle-nav-sidebar").click()
        self.wait(
            EC.invisibility_of_element_located((By.ID, "nav-sidebar")),
            "the navigation sidebar to fold away",
        )

    @property
    def path(self) -> str:
        return self.driver.current_url.removeprefix(self.base)

    # Finding things.

    def wait(self, condition, what: str, timeout: float = WAIT):
        try:
            return WebDriverWait(self.driver, timeout).until(condition)
        except TimeoutException:
            self.shot(f"timeout-{re.sub(r'[^a-z0-9]+', '-', what.lower()).strip('-')}")
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} on {self.driver.current_url}"
            ) from None

    def element(self, css: str) -> WebElement:
        return self.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, css)), repr(css))

    def elements(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def link(self, text: str, within: str = "body") -> WebElement:
        """The visible link whose text is exactly ``text`` inside ``within``.

        Compared as written in the page: the admin's CSS upper-cases some links.
        """

        def find(driver):
            for candidate in driver.find_elements(By.CSS_SELECTOR, f"{within} a"):
                written = " ".join(candidate.get_attribute("textContent").split())
                if written == text and candidate.is_displayed():
                    return candidate
            return False

        return self.wait(find, f"a link {text!r} in {within!r}")

    def message(self, level: str) -> str:
        return self.element(f"ul.messagelist li.{level}").text

    def row(self, pk: int) -> WebElement:
        """The changelist row of scheduled function ``pk``."""
        return self.element(f'#result_list input.action-select[value="{pk}"]').find_element(
            By.XPATH, "./ancestor::tr"
        )

    def row_state(self, pk: int) -> str:
        return self.row(pk).find_element(By.CSS_SELECTOR, ".cs-badge").text

    def listed_ids(self) -> list[int]:
        return sorted(
            int(box.get_attribute("value"))
            for box in self.elements("#result_list input.action-select")
        )

    def detail_state(self) -> str:
        return self.element(".field-state_badge .cs-badge").text

    # Evidence.

    def shot(self, step: str, docs: str | None = None) -> Path:
        """Save a screenshot of this step; with ``docs``, refresh that docs image too.

        Docs images show the whole page, the others what the window shows.
        """
        self.steps += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{self.steps:02d}-{step}.png"
        if docs:
            path.write_bytes(self.full_page_png())
        else:
            self.driver.save_screenshot(str(path))
        if docs and UPDATE_SCREENSHOTS:
            DOCS_STATIC.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_STATIC / docs)
        return path

    def full_page_png(self) -> bytes:
        """The whole page: the window is made as tall as the page for the shot."""
        # No caret or focus ring in a picture for the docs.
        self.driver.execute_script("document.activeElement && document.activeElement.blur()")
        size = self.driver.get_window_size()
        inner, page = self.driver.execute_script(
            "return [window.innerHeight, document.documentElement.scrollHeight];"
        )
        if page <= inner:
            return self.driver.get_screenshot_as_png()
        self.driver.set_window_size(size["width"], size["height"] + page - inner)
        try:
            self.wait(
                lambda driver: driver.execute_script("return window.innerHeight") >= page,
                "the window to grow to the page's height",
            )
            return self.driver.get_screenshot_as_png()
        finally:
            self.driver.set_window_size(size["width"], size["height"])

    def console_errors(self) -> list[str]:
        # A refused form or page is a 400 or 403 by design (the admin answers
        # invalid input with a 4xx); Chromium logs that status of the page
        # itself as a failed resource. Anything else is an error.
        return [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if entry["level"] == "SEVERE"
            and "favicon.ico" not in entry["message"]
            and not REFUSED_PAGE.search(entry["message"])
        ]


@pytest.fixture
def browser(request, live_server):
    """A fresh headless Chromium (own profile) for one test; quit afterwards."""
    if webdriver is None:
        pytest.fail("CONVEX_REQUIRE_BROWSER=1 but selenium is not installed")
    if _missing_browser():
        pytest.fail(f"CONVEX_REQUIRE_BROWSER=1 but {_missing_reason()}")
    name = request.node.name.removeprefix("test_")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob(f"{name}-*"):
        old.unlink()
    profile = tempfile.mkdtemp(prefix="convex-chromium-")
    # An explicit driver path and browser binary: Selenium Manager never runs.
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=chrome_options(profile))
    try:
        driver.set_page_load_timeout(WAIT)
        browser = Browser(driver, live_server.url, name)
        yield browser
        # The last page as the test left it: the first thing to look at after a failure.
        browser.shot("end")
        (ARTIFACTS / f"{name}-end.html").write_text(driver.page_source)
        errors = browser.console_errors()
        assert not errors, f"JavaScript console errors: {errors}"
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser(USERNAME, "admin@example.com", PASSWORD)


def log_in(browser: Browser, username: str = USERNAME) -> None:
    """Open the admin, get sent to the login form, fill it in and land on the index."""
    browser.get(reverse("admin:index"))
    assert browser.path.startswith(reverse("admin:login")), browser.path
    browser.element("#id_username").send_keys(username)
    browser.element("#id_password").send_keys(PASSWORD)
    browser.shot("login")
    browser.click_and_load(browser.element('#login-form input[type="submit"]'))
    assert browser.path == reverse("admin:index"), browser.path
    assert browser.element("#user-tools strong").get_attribute("textContent") == username


def staff_with(username: str, *actions: str):
    """A staff user with only the named permissions on scheduled functions."""
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(username, password=PASSWORD, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=[f"{action}_scheduledfunction" for action in actions]
        )
    )
    return user


def change_path(pk: int) -> str:
    return reverse("admin:convex_scheduler_scheduledfunction_change", args=[pk])


def state_of(pk: int) -> str:
    return ScheduledFunction.objects.get(pk=pk).state


def test_filter_cancel_schedule_and_run_to_success(browser, staff):
    # Some history for the list: a success, a failure, and three waiting an hour.
    scheduler.run_after(0, functions.increment, {"name": "earlier"})
    scheduler.run_after(0, functions.failing_action)
    assert run_due().finished == 2
    waiting = [
        scheduler.run_after(HOUR_MS, functions.increment, {"name": f"later-{n}"}) for n in range(3)
    ]

    log_in(browser)
    browser.shot("index")

    # The app list links to the scheduled functions; the overview counts the states.
    # (The app is also called "Scheduled functions"; this is the model's row.)
    browser.click_and_load(
        browser.link("Scheduled functions", within="#content-main tr.model-scheduledfunction")
    )
    assert browser.path == CHANGELIST
    # The list is wide; fold the navigation away (the browser remembers it).
    browser.hide_nav_sidebar()
    assert browser.element('.cs-count[data-state="pending"]').text == "3"
    assert browser.element('.cs-count[data-state="failed"]').text == "1"
    # The app's stylesheet is served and applied: badges are coloured.
    badge = browser.element(".cs-badge.cs-state-failed")
    assert badge.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
    browser.shot("changelist")

    # Filter to pending through the sidebar.
    browser.click_and_load(
        browser.link("pending", within='#changelist-filter [data-filter-title="state"]')
    )
    assert "state__exact=pending" in browser.path
    assert browser.listed_ids() == sorted(waiting)
    assert {browser.row_state(pk) for pk in waiting} == {"pending"}
    browser.shot("filtered-pending")

    # Select one row and run "Cancel selected scheduled functions".
    victim = waiting[1]
    checkbox = browser.element(f'#result_list input.action-select[value="{victim}"]')
    checkbox.click()
    browser.wait(EC.element_selection_state_to_be(checkbox, True), "the row to be selected")
    assert "selected" in browser.row(victim).get_attribute("class")
    Select(browser.element('select[name="action"]')).select_by_value("cancel_selected")
    browser.shot("cancel-action-chosen")
    browser.click_and_load(browser.element('.actions button[name="index"]'))
    assert browser.message("success") == "Canceled 1 scheduled function."
    # Back on the pending list, which no longer has it.
    assert "state__exact=pending" in browser.path
    assert browser.listed_ids() == sorted(set(waiting) - {victim})
    browser.shot("canceled-one")
    assert state_of(victim) == State.CANCELED
    assert {state_of(pk) for pk in waiting if pk != victim} == {State.PENDING}

    # The overview links to the canceled ones, where it now is.
    browser.click_and_load(browser.element('.cs-overview a[href="?state__exact=canceled"]'))
    assert browser.listed_ids() == [victim]
    assert browser.row_state(victim) == "canceled"
    browser.shot("canceled-list")

    # Schedule a function with the form.
    browser.click_and_load(browser.link("Schedule a function", within=".object-tools"))
    assert browser.path == ADD
    Select(browser.element("#id_function")).select_by_value("tests.functions:increment")
    args = browser.element("#id_args")
    args.clear()
    args.send_keys('{"name": "browser", "by": 2}')
    delay = browser.element("#id_delay_ms")
    delay.clear()
    delay.send_keys("0")
    browser.shot("schedule-form", docs="admin-schedule.png")
    browser.click_and_load(browser.element('input[name="_schedule"]'))

    # It lands on the new function's detail page, pending.
    match = re.fullmatch(r".*/scheduledfunction/(\d+)/change/", browser.path)
    assert match, browser.path
    new = int(match.group(1))
    assert browser.message("success") == f"Scheduled tests.functions:increment #{new} (pending)."
    assert browser.detail_state() == "pending"
    assert '"by": 2' in browser.element(".field-args_pretty pre").text
    browser.shot("scheduled")

    # And in the list, pending, until a worker runs it.
    # The breadcrumbs name the app and then the model, both "Scheduled functions".
    browser.click_and_load(browser.element(f'.breadcrumbs a[href="{CHANGELIST}"]'))
    assert browser.row_state(new) == "pending"
    assert browser.element('.cs-count[data-state="pending"]').text == "3"
    browser.shot("new-row-pending")

    stats = run_due()
    assert (stats.succeeded, stats.failed) == (1, 0)
    assert Counter.objects.get(name="browser").value == 2

    browser.reload()
    assert browser.row_state(new) == "success"
    assert browser.row_state(victim) == "canceled"
    assert browser.element('.cs-count[data-state="pending"]').text == "2"
    assert browser.element('.cs-count[data-state="success"]').text == "2"
    assert "nothing is due" in browser.element(".cs-overview-lag").text
    browser.shot("ran-to-success", docs="admin-changelist.png")

    # A mistake in the form is shown on the field at fault, and nothing is scheduled.
    browser.click_and_load(browser.link("Schedule a function", within=".object-tools"))
    Select(browser.element("#id_function")).select_by_value("tests.functions:increment")
    args = browser.element("#id_args")
    args.clear()
    args.send_keys('{"nmae": "browser"}')
    browser.click_and_load(browser.element('input[name="_schedule"]'))
    assert browser.path == ADD
    assert browser.element(".errornote").is_displayed()
    error = browser.element(".field-args .errorlist").text
    assert "missing a required argument: 'name'" in error, error
    # What was typed is kept for correcting.
    assert "nmae" in browser.element("#id_args").get_attribute("value")
    browser.shot("schedule-error")
    assert ScheduledFunction.objects.count() == 6


def test_cancel_from_the_detail_page(browser, staff):
    # A parent that scheduled two children an hour out.
    parent = scheduler.run_after(
        0, functions.schedule_children, {"name": "child", "count": 2, "delay_ms": HOUR_MS}
    )
    assert run_due().succeeded == 1
    first, second = ScheduledFunction.objects.filter(parent_id=parent).order_by("id")
    assert {first.state, second.state} == {State.PENDING}

    log_in(browser)
    browser.get(CHANGELIST)
    browser.hide_nav_sidebar()
    browser.click_and_load(browser.row(parent).find_element(By.LINK_TEXT, str(parent)))
    assert browser.path == change_path(parent)
    assert browser.detail_state() == "success"
    # A finished function has nothing to cancel.
    assert not browser.elements(".cs-cancel-button")
    children = browser.element(".field-children_links .cs-children")
    assert [badge.text for badge in children.find_elements(By.CSS_SELECTOR, ".cs-badge")] == [
        "pending",
        "pending",
    ]
    browser.shot("parent-detail")

    # Follow the first child's link.
    browser.click_and_load(browser.link(f"#{first.pk} {first.name}", within=".cs-children"))
    assert browser.path == change_path(first.pk)
    assert browser.detail_state() == "pending"
    assert '"name": "child"' in browser.element(".field-args_pretty pre").text
    assert browser.link(f"#{parent} tests.functions:schedule_children", within=".field-parent_link")
    # Read-only: no save or delete buttons.
    assert not browser.elements('input[name="_save"]')
    assert not browser.elements(".deletelink")
    browser.shot("child-detail", docs="admin-detail.png")

    browser.click_and_load(browser.element("button.cs-cancel-button"))
    assert browser.path == change_path(first.pk)
    assert browser.message("success") == f"Canceled {first.name} #{first.pk} (canceled)."
    assert browser.detail_state() == "canceled"
    assert not browser.elements(".cs-cancel-button")
    browser.shot("child-canceled")
    assert state_of(first.pk) == State.CANCELED
    assert state_of(second.pk) == State.PENDING

    # The parent's page shows it too.
    browser.click_and_load(browser.link(f"#{parent} tests.functions:schedule_children"))
    children = browser.element(".field-children_links .cs-children")
    assert [badge.text for badge in children.find_elements(By.CSS_SELECTOR, ".cs-badge")] == [
        "canceled",
        "pending",
    ]
    browser.shot("parent-after-cancel")


def test_a_view_only_user_sees_no_cancel_button_and_no_schedule_form(browser, db):
    staff_with("viewer", "view")
    pending = scheduler.run_after(HOUR_MS, functions.increment, {"name": "waiting"})

    log_in(browser, "viewer")
    browser.get(CHANGELIST)
    browser.hide_nav_sidebar()
    # A read-only list: its title says so, and nothing offers to change a row.
    assert browser.element("#content h1").text == "Scheduled functions"
    assert browser.link(str(pending), within="#result_list")
    assert not browser.elements(".object-tools a.addlink")
    assert not browser.elements('select[name="action"]')
    assert not browser.elements('input[name="_selected_action"]')
    browser.shot("viewer-list")

    browser.click_and_load(browser.link(str(pending), within="#result_list"))
    assert browser.path == change_path(pending)
    assert browser.detail_state() == "pending"
    assert not browser.elements(".cs-cancel-button")
    assert not browser.elements('input[name="_save"]')
    # Times to the second.
    scheduled = browser.element(".field-scheduled_at time").text
    assert re.search(r"\d\d:\d\d:\d\d$", scheduled), scheduled
    browser.shot("viewer-detail")

    # The schedule form is refused outright.
    browser.get(ADD)
    assert not browser.elements("#scheduledfunction_schedule_form")
    assert not browser.elements('input[name="_schedule"]')
    assert "403" in browser.driver.page_source or "Forbidden" in browser.driver.page_source
    browser.shot("viewer-schedule-refused")
    assert state_of(pending) == State.PENDING


def test_add_and_change_permissions_each_unlock_their_own_control(browser, db):
    staff_with("scheduler", "view", "add")
    staff_with("canceler", "view", "change")
    pending = scheduler.run_after(HOUR_MS, functions.increment, {"name": "waiting"})

    log_in(browser, "scheduler")
    browser.get(CHANGELIST)
    assert browser.elements(".object-tools a.addlink")
    browser.get(change_path(pending))
    assert not browser.elements(".cs-cancel-button")
    browser.get(ADD)
    options = [
        option.get_attribute("value")
        for option in browser.elements("#id_function option")
        if option.get_attribute("value")
    ]
    # Internal functions need their own permission.
    assert "tests.functions:increment" in options
    assert "tests:internal_increment" not in options
    browser.shot("scheduler-form")

    browser.driver.delete_all_cookies()
    log_in(browser, "canceler")
    browser.get(CHANGELIST)
    assert not browser.elements(".object-tools a.addlink")
    browser.get(change_path(pending))
    browser.click_and_load(browser.element("button.cs-cancel-button"))
    assert browser.detail_state() == "canceled"
    assert state_of(pending) == State.CANCELED
