"""Drives the Gantry console in a real headless Chromium (Debian's chromium and
chromium-driver, through Selenium) as an operator, a viewer and an attacker would,
for tests/tests/console.rs. Every page visited is saved as a screenshot in OUT.

Usage: browser.py PLAN.json OUT_DIR
PLAN: {"base": "http://127.0.0.1:PORT", "operator_link": URL, "viewer_link": URL,
       "nodes": [names], "rollout": ID, "done_rollout": ID, "model": NAME,
       "versions": [..], "xid_node": NAME, "xid": CODE}

Exits non-zero naming the first check that failed; prints one line per check, and
writes OUT/report.signed.json (the audit report downloaded from the console).
"""

import json
import os
import sys
import time

os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach the network

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

plan = json.load(open(sys.argv[1]))
out = sys.argv[2]
base = plan["base"]
chromium = os.environ.get("GANTRY_CHROMIUM", "/usr/bin/chromium")
driver_path = os.environ.get("GANTRY_CHROMEDRIVER", "/usr/bin/chromedriver")


def check(ok, what):
    if not ok:
        raise SystemExit(f"console check failed: {what}")
    print(f"ok: {what}", flush=True)


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = chromium
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu",
              "--disable-dev-shm-usage", "--window-size=1360,1000",
              "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync"]:
        o.add_argument(a)
    return webdriver.Chrome(service=Service(driver_path), options=o)


def main_text(d):
    for _ in range(20):
        try:
            return d.find_element(By.TAG_NAME, "main").text
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise SystemExit("the page's <main> kept changing under the test")


def shot(d, name):
    """Saves the whole page, not just the window, as OUT/name.png."""
    for _ in range(3):  # the layout can reflow once the window is taller
        height = d.execute_script(
            "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight);")
        d.set_window_size(1360, max(1000, min(int(height) + 140, 8000)))
    d.save_screenshot(os.path.join(out, name + ".png"))
    d.set_window_size(1360, 1000)


def visit(d, path, name, *expect):
    d.get(base + path)
    text = main_text(d)
    shot(d, name)
    for e in expect:
        check(e in text, f"{path} shows {e!r}")
    return text


def wait_text(d, path, expect, within=20.0):
    deadline = time.time() + within
    while True:
        d.get(base + path)
        text = main_text(d)
        if expect in text:
            return text
        if time.time() > deadline:
            raise SystemExit(f"console check failed: {path} never showed {expect!r}:\n{text[:2000]}")
        time.sleep(0.5)


def navigating(d, act, within=20.0):
    """Runs `act` (a click or a script that submits a form) and waits until the
    browser has loaded the page it leads to: a click returns before the POST's answer
    arrives, and the next d.get would otherwise cancel it."""
    d.execute_script("window.__gantry_old_page = true;")
    act()
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if d.execute_script(
                    "return !window.__gantry_old_page && document.readyState === 'complete';"):
                return
        except Exception:  # the old document went away mid-call
            pass
        time.sleep(0.05)
    raise SystemExit(f"console check failed: no page loaded within {within} s ({d.current_url})")


def click(d, label):
    """Clicks the button labelled `label` (retrying while live refresh swaps <main>)
    and waits for the page its form leads to."""
    for _ in range(40):
        try:
            for b in d.find_elements(By.CSS_SELECTOR, "main form.action button"):
                if b.text.strip() == label:
                    navigating(d, b.click)
                    return
        except StaleElementReferenceException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"console check failed: no {label!r} button on {d.current_url}")


def sign_in(d, link):
    d.get(link)
    navigating(d, d.find_element(By.ID, "sign-in").click)


def session_cookie(d):
    return [c for c in d.get_cookies() if c["name"] == "__Host-gantry_session"]


d = browser()
try:
    # Nothing is shown before sign-in.
    d.get(base + "/")
    check(d.current_url.startswith(base + "/login"), "an unsigned visitor is sent to /login")
    shot(d, "sign-in")

    # The operator signs in with the link from `gantry console login`.
    sign_in(d, plan["operator_link"])
    check(d.current_url == base + "/", f"sign-in lands on the fleet page ({d.current_url})")
    cookie = session_cookie(d)
    check(len(cookie) == 1 and cookie[0]["httpOnly"] and cookie[0]["secure"]
          and cookie[0].get("sameSite") == "Strict",
          f"the session cookie is HttpOnly, Secure and SameSite=Strict ({cookie})")

    text = visit(d, "/", "fleet", *plan["nodes"])
    who = d.find_element(By.TAG_NAME, "header").text
    check("olivia" in who and "operator" in who, f"the header names who is signed in ({who!r})")
    check("healthy" in text, "the fleet page shows health")
    check(plan["xid_node"] in text and str(plan["xid"]) in text,
          "the fleet page names the node with an XID and the code")
    text = visit(d, "/?q=rack%3Dr1", "fleet-search")
    check(plan["nodes"][1] in text and plan["nodes"][0] not in text,
          "searching by label rack=r1 keeps only that rack's node")

    node = plan["xid_node"]
    deadline = time.time() + 30
    while True:
        text = visit(d, f"/nodes/{node}", "node", node, "H100", plan["model"], str(plan["xid"]))
        drawn = d.find_elements(By.CSS_SELECTOR, "main svg path")
        if len(drawn) >= 8 or time.time() > deadline:
            break
        time.sleep(1)
    check(len(drawn) >= 8, f"the node page draws 4 charts of its 2 GPUs ({len(drawn)} series)")
    visit(d, "/rollouts", "rollouts", plan["rollout"], plan["done_rollout"])
    rollout = f"/rollouts/{plan['rollout']}"
    visit(d, rollout, "rollout", plan["rollout"], "Baking", "left of 30.0 min")
    click(d, "Pause")
    text = main_text(d)
    shot(d, "rollout-paused")
    check("rollout pause: done" in text, f"pausing from the page says it was done ({text[:300]!r})")
    wait_text(d, rollout, "paused")
    click(d, "Resume")
    text = main_text(d)
    shot(d, "rollout-resumed")
    check("rollout resume: done" in text, f"resuming from the page says it was done ({text[:300]!r})")
    wait_text(d, rollout, "baking")

    visit(d, "/models", "models", plan["model"])
    visit(d, f"/models/{plan['model']}", "model", plan["model"], *plan["versions"])
    visit(d, "/kpis", "kpis", "Deployments", "Change failure rate", "Time to recover")
    check(len(d.find_elements(By.CSS_SELECTOR, "main svg rect")) >= 1,
          "the KPI page draws the finished rollout as a bar")
    visit(d, "/audit", "audit", "intact", "olivia", "rollout.paused")
    text = visit(d, "/audit?q=victor", "audit-search")
    check("victor" in text and "olivia" not in text,
          "searching the audit log by actor keeps only that admin's entries")

    # The signed report, downloaded as the browser would (same session, same origin).
    report = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/audit/report.json', {credentials: 'same-origin'})"
        ".then(r => r.text().then(t => done([r.status, r.headers.get('content-disposition'), t])))"
        ".catch(e => done([0, '', String(e)]));")
    check(report[0] == 200 and "attachment" in (report[1] or ""),
          f"the audit report downloads as a file ({report[0]}, {report[1]})")
    with open(os.path.join(out, "report.signed.json"), "w") as f:
        f.write(report[2])

    # Sign out: the session is gone.
    d.get(base + "/")
    navigating(d, d.find_element(By.CSS_SELECTOR, "header form button").click)
    check(d.current_url.startswith(base + "/login"), "signing out goes back to /login")
    d.get(base + "/")
    check(d.current_url.startswith(base + "/login"), "after sign-out the pages need sign-in again")

    # The same link again: refused, saying it was used.
    sign_in(d, plan["operator_link"])
    text = main_text(d)
    shot(d, "replayed-sign-in")
    check("already used" in text, f"a replayed sign-in link is refused ({text[:200]!r})")
    check(not session_cookie(d), "a replayed link sets no session")

    # A forged session cookie: refused.
    d.add_cookie({"name": "__Host-gantry_session", "value": "A" * 43, "path": "/",
                  "secure": True, "httpOnly": True, "sameSite": "Strict"})
    d.get(base + "/rollouts")
    text = main_text(d)
    shot(d, "forged-cookie")
    check("not one this controller issued" in text, f"a forged session cookie is refused ({text[:200]!r})")
    d.delete_all_cookies()

    # A viewer sees, and is refused when it posts an action anyway.
    sign_in(d, plan["viewer_link"])
    check(d.current_url == base + "/", "the viewer signs in")
    text = visit(d, rollout, "rollout-as-viewer", plan["rollout"])
    buttons = [b.text for b in d.find_elements(By.CSS_SELECTOR, "main form.action button")]
    check(not buttons, f"a viewer is offered no actions ({buttons})")
    csrf = d.find_element(By.CSS_SELECTOR, "header input[name=csrf]").get_attribute("value")
    navigating(d, lambda: d.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "const i = document.createElement('input'); i.type = 'hidden'; i.name = 'csrf'; i.value = arguments[1];"
        "f.appendChild(i); document.body.appendChild(f); f.submit();",
        rollout + "/pause", csrf))
    text = main_text(d)
    shot(d, "viewer-refused")
    check("viewer" in text and "operator" in text, f"a viewer's action is refused, saying why ({text[:200]!r})")
finally:
    d.quit()
print("console: every check passed", flush=True)
