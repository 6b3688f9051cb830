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


def visit(d, path, shot, *expect):
    d.get(base + path)
    text = main_text(d)
    d.save_screenshot(os.path.join(out, shot + ".png"))
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


def click(d, label):
    """Clicks the button labelled `label` (retrying while live refresh swaps <main>)."""
    for _ in range(40):
        try:
            for b in d.find_elements(By.CSS_SELECTOR, "main form.action button"):
                if b.text.strip() == label:
                    b.click()
                    return
        except StaleElementReferenceException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"console check failed: no {label!r} button on {d.current_url}")


def sign_in(d, link):
    d.get(link)
    d.find_element(By.ID, "sign-in").click()


def session_cookie(d):
    return [c for c in d.get_cookies() if c["name"] == "__Host-gantry_session"]


d = browser()
try:
    # Nothing is shown before sign-in.
    d.get(base + "/")
    check(d.current_url.startswith(base + "/login"), "an unsigned visitor is sent to /login")
    d.save_screenshot(os.path.join(out, "sign-in.png"))

    # The operator signs in with the link from `gantry console login`.
    sign_in(d, plan["operator_link"])
    check(d.current_url == base + "/", f"sign-in lands on the fleet page ({d.current_url})")
    cookie = session_cookie(d)
    check(len(cookie) == 1 and cookie[0]["httpOnly"] and cookie[0]["secure"]
          and cookie[0].get("sameSite") == "Strict",
          f"the session cookie is HttpOnly, Secure and SameSite=Strict ({cookie})")

    text = visit(d, "/", "fleet", *plan["nodes"], "olivia")
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
    visit(d, rollout, "rollout", plan["rollout"], "bake")
    click(d, "Pause")
    text = wait_text(d, rollout, "paused")
    check("rollout pause: done" in text, "pausing from the page says it was done")
    d.save_screenshot(os.path.join(out, "rollout-paused.png"))
    click(d, "Resume")
    text = main_text(d)
    check("rollout resume: done" in text, "resuming from the page says it was done")
    d.save_screenshot(os.path.join(out, "rollout-resumed.png"))

    visit(d, "/models", "models", plan["model"])
    visit(d, f"/models/{plan['model']}", "model", plan["model"], *plan["versions"])
    visit(d, "/kpis", "kpis", "Deployments", "Change failure rate", "Time to recover")
    check(len(d.find_elements(By.CSS_SELECTOR, "main svg rect")) >= 1,
          "the KPI page draws the finished rollout as a bar")
    visit(d, "/audit", "audit", "intact", "olivia")

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
    d.find_element(By.CSS_SELECTOR, "header form button").click()
    check(d.current_url.startswith(base + "/login"), "signing out goes back to /login")
    d.get(base + "/")
    check(d.current_url.startswith(base + "/login"), "after sign-out the pages need sign-in again")

    # The same link again: refused, saying it was used.
    sign_in(d, plan["operator_link"])
    text = main_text(d)
    d.save_screenshot(os.path.join(out, "replayed-sign-in.png"))
    check("already used" in text, f"a replayed sign-in link is refused ({text[:200]!r})")
    check(not session_cookie(d), "a replayed link sets no session")

    # A forged session cookie: refused.
    d.add_cookie({"name": "__Host-gantry_session", "value": "A" * 43, "path": "/",
                  "secure": True, "httpOnly": True, "sameSite": "Strict"})
    d.get(base + "/rollouts")
    text = main_text(d)
    d.save_screenshot(os.path.join(out, "forged-cookie.png"))
    check("not one this controller issued" in text, f"a forged session cookie is refused ({text[:200]!r})")
    d.delete_all_cookies()

    # A viewer sees, and is refused when it posts an action anyway.
    sign_in(d, plan["viewer_link"])
    check(d.current_url == base + "/", "the viewer signs in")
    text = visit(d, rollout, "rollout-as-viewer", plan["rollout"])
    buttons = [b.text for b in d.find_elements(By.CSS_SELECTOR, "main form.action button")]
    check(not buttons, f"a viewer is offered no actions ({buttons})")
    csrf = d.find_element(By.CSS_SELECTOR, "header input[name=csrf]").get_attribute("value")
    d.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "const i = document.createElement('input'); i.type = 'hidden'; i.name = 'csrf'; i.value = arguments[1];"
        "f.appendChild(i); document.body.appendChild(f); f.submit();",
        rollout + "/pause", csrf)
    time.sleep(0.5)
    text = main_text(d)
    d.save_screenshot(os.path.join(out, "viewer-refused.png"))
    check("viewer" in text and "operator" in text, f"a viewer's action is refused, saying why ({text[:200]!r})")
finally:
    d.quit()
print("console: every check passed", flush=True)
