"""Take docs/first-hour.md's screenshots from a running `make run`, with headless Chromium.

    .venv/bin/python docs/img/screenshots.py [--base http://127.0.0.1:8000]
        [--credentials var/credentials.txt] [--out docs/img]

Needs Debian's chromium and chromedriver (`make browser`), and the admin password that make run
wrote to var/credentials.txt. Writes 01-site-root.png, 02-demo-offer.png, 03-email-preview.png
and 04-dashboard.png.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent.parent


def chromium(profile: Path) -> webdriver.Chrome:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        sys.exit("install chromium and chromium-driver (make browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,860", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(driver))


def admin_password(credentials: Path) -> str:
    found = re.findall(r"^  password +(\S+)$", credentials.read_text(), flags=re.MULTILINE)
    if not found:
        sys.exit(f"no admin password in {credentials}")
    return found[-1]  # the newest


def log_in(driver: webdriver.Chrome, base: str, password: str) -> None:
    driver.get(f"{base}/admin/login/")
    driver.find_element(By.NAME, "username").send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    WebDriverWait(driver, 10).until(ec.url_contains("/admin/"))


def demo_offer(driver: webdriver.Chrome, base: str, out: Path) -> None:
    driver.get(f"{base}/demo/")
    for _ in range(4):  # a cart in the demo campaign's holdout (one in ten) gets no offer
        wait = WebDriverWait(driver, 15)
        wait.until(  # the snippet's socket is open: its events are the server's at once
            lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "open"
        )
        buttons = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "button.add"))
        for button in buttons[:2]:
            button.click()
        time.sleep(6)  # the snippet's minimum dwell before an exit intent counts
        for y in (300, 40, 5, -20):  # the pointer leaves through the top of the window
            driver.execute_cdp_cmd(
                "Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 640, "y": y}
            )
        try:
            wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))
        except TimeoutException:
            driver.execute_cdp_cmd(
                "Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 640, "y": 300}
            )
            driver.find_element(By.ID, "new-cart").click()
            continue
        time.sleep(0.5)
        driver.save_screenshot(str(out / "02-demo-offer.png"))
        return
    print("no offer after four carts; 02-demo-offer.png not taken", file=sys.stderr)


def email_preview(driver: webdriver.Chrome, base: str, out: Path) -> None:
    driver.get(f"{base}/admin/campaigns/campaign/")
    driver.find_element(By.PARTIAL_LINK_TEXT, "Demo").click()
    links = [a.get_attribute("href") for a in driver.find_elements(By.TAG_NAME, "a")]
    previews = [href for href in links if href and "/preview/" in href]
    if not previews:
        print("no email preview link on the demo campaign's page; skipped", file=sys.stderr)
        return
    driver.get(previews[0])
    time.sleep(1)
    driver.save_screenshot(str(out / "03-email-preview.png"))


def dashboard(driver: webdriver.Chrome, base: str, out: Path) -> None:
    driver.get(f"{base}/dashboard/")
    time.sleep(1.5)
    driver.save_screenshot(str(out / "04-dashboard.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--credentials", type=Path, default=ROOT / "var" / "credentials.txt")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    base = args.base.rstrip("/")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        driver = chromium(Path(profile))
        try:
            driver.get(f"{base}/")
            driver.save_screenshot(str(args.out / "01-site-root.png"))
            demo_offer(driver, base, args.out)
            log_in(driver, base, admin_password(args.credentials))
            email_preview(driver, base, args.out)
            dashboard(driver, base, args.out)
        finally:
            driver.quit()
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
