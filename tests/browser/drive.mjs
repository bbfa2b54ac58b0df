// The page tests' browser driver: Debian's headless Chromium driven through
// puppeteer-core (no browser download), one scenario per run.
//
//   node drive.mjs < scenario.json > result.json
//
// A scenario is {"steps": [...], "timeout_ms": 60000, "viewport": {...}};
// each step is an object with one `do`:
//   {"do": "goto", "url": "..."}                  status and final URL
//   {"do": "fill", "selector": "#q", "value": "x"} replaces the field's value
//                                                  by typing it
//   {"do": "set_value", "selector": "...", "value": "x"}
//                                                  sets a field's value from
//                                                  script (hidden fields too)
//   {"do": "location"}                            the current URL and the
//                                                  status of the document
//   {"do": "goto_until", "url": "...", "url_contains": "...",
//    "deadline_ms": 20000, "every_ms": 250}       opens the URL again and again
//                                                  until the final URL holds
//                                                  the text, or fails at the
//                                                  deadline
//   {"do": "timezone", "zone": "Asia/Kolkata"}    the page's time zone
//   {"do": "read", "selector": "..."}             the first match's text,
//                                                  value and attributes
//   {"do": "tab_to", "selector": "#q", "max": 40}  presses Tab until the
//                                                  element has focus
//   {"do": "await_focus", "selector": "#email"}   waits until the element has
//                                                  focus (autofocus lands at a
//                                                  rendering update, maybe after load)
//   {"do": "type", "text": "..."}                 types into the focused element
//   {"do": "press", "key": "Enter", "navigates": true}
//   {"do": "click", "selector": "...", "navigates": true}
//   {"do": "expect_text", "text": "..."}          fails unless the page shows it
//   {"do": "axe"}                                 serious and critical violations
//   {"do": "set_cookie", "url": "...", "name": "...", "value": "..."}
//   {"do": "cookies"}                             the page's cookies
//   {"do": "html"}                                the DOM as serialized HTML
//   {"do": "layout", "selector": "...", "within": "header"}
//                                                  where the first match is
//                                                  drawn: the viewport's and
//                                                  the document's widths, its
//                                                  box, the box of `within`
//                                                  (its closest ancestor
//                                                  matching it) and whether it
//                                                  lies inside it, and whether
//                                                  it is visible (shown, in the
//                                                  viewport, on top at its
//                                                  centre); and the element's
//                                                  own scroll and client widths
//   {"do": "screenshot", "path": "..."}           a full-page PNG
// The result on stdout is {"ok": bool, "steps": [...], "error": ...}: one
// entry per step that ran; on the first failure `ok` is false, `error`
// names the step and the run stops. The exit status is 0 whenever a result
// was printed (the caller reads `ok`), 2 when the scenario could not be read.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import puppeteer from "puppeteer-core";

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
// What the tests fail on; minor and moderate findings are only counted.
const BLOCKING = new Set(["serious", "critical"]);

function readScenario() {
  try {
    const scenario = JSON.parse(readFileSync(0, "utf8"));
    if (!Array.isArray(scenario.steps)) throw new Error("`steps` must be an array");
    return scenario;
  } catch (err) {
    process.stderr.write(`drive.mjs: cannot read the scenario on stdin: ${err.message}\n`);
    process.exit(2);
  }
}

// Run `action` (which may trigger a navigation) and, when `navigates`, wait
// for the new document to load.
async function maybeNavigating(page, navigates, timeout, action) {
  if (!navigates) {
    await action();
    return {};
  }
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: "load", timeout }),
    action(),
  ]);
  return { status: response ? response.status() : null, url: page.url() };
}

async function focusedMatches(page, selector) {
  return page.evaluate((sel) => {
    const el = document.activeElement;
    return !!el && el !== document.body && el.matches(sel);
  }, selector);
}

async function describeFocus(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return "nothing";
    const id = el.id ? `#${el.id}` : "";
    const name = el.getAttribute("name") ? `[name=${el.getAttribute("name")}]` : "";
    return `${el.tagName.toLowerCase()}${id}${name}`;
  });
}

async function runAxe(page) {
  const loaded = await page.evaluate(() => typeof window.axe !== "undefined");
  if (!loaded) await page.evaluate(AXE_SOURCE);
  const results = await page.evaluate(async () => {
    // `color-contrast` needs the page's own styles, which are loaded by now.
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      help_url: v.helpUrl,
      nodes: v.nodes.map((n) => ({
        target: n.target.map(String).join(" "),
        html: n.html.slice(0, 300),
        summary: n.failureSummary || "",
      })),
    }));
  });
  return {
    url: page.url(),
    violations: results.filter((v) => BLOCKING.has(v.impact)),
    minor: results.filter((v) => !BLOCKING.has(v.impact)).map((v) => `${v.id} (${v.impact})`),
  };
}

// The status of the main frame's last document (after redirects), kept
// as the page navigates: `location` reports it.
function trackStatus(page) {
  const seen = { status: null };
  page.on("response", (response) => {
    const request = response.request();
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()) {
      seen.status = response.status();
    }
  });
  return seen;
}

async function gotoUntil(page, s, timeout) {
  const deadline = Date.now() + (s.deadline_ms ?? 20_000);
  for (let tries = 1; ; tries += 1) {
    const response = await page.goto(s.url, { waitUntil: "load", timeout });
    if (page.url().includes(s.url_contains)) {
      return { tries, status: response ? response.status() : null, url: page.url() };
    }
    if (Date.now() > deadline) {
      throw new Error(`${s.url} never led to a URL holding ${JSON.stringify(s.url_contains)} (last: ${page.url()}, ${tries} tries)`);
    }
    await new Promise((resolve) => setTimeout(resolve, s.every_ms ?? 250));
  }
}

// Where the first element matching `selector` is drawn (the `layout` step).
async function layout(page, selector, within) {
  return page.evaluate((sel, within) => {
    const box = (el) => {
      const r = el.getBoundingClientRect();
      return { left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height };
    };
    const doc = document.documentElement;
    const out = {
      url: location.href,
      viewport_width: doc.clientWidth,
      scroll_width: doc.scrollWidth,
      found: false,
    };
    const el = document.querySelector(sel);
    if (!el) return out;
    const r = box(el);
    const style = getComputedStyle(el);
    const cx = r.left + r.width / 2;
    const cy = r.top + r.height / 2;
    const inViewport = r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= doc.clientWidth;
    let onTop = false;
    if (inViewport) {
      el.scrollIntoView({ block: "center", inline: "nearest" });
      const moved = el.getBoundingClientRect();
      const hit = document.elementFromPoint(moved.left + moved.width / 2, moved.top + moved.height / 2);
      onTop = !!hit && (hit === el || el.contains(hit));
    }
    Object.assign(out, {
      found: true,
      box: r,
      centre: { x: cx, y: cy },
      scroll_width_of: el.scrollWidth,
      client_width_of: el.clientWidth,
      visible: style.visibility === "visible" && style.display !== "none" && Number(style.opacity) > 0 && inViewport && onTop,
    });
    if (within) {
      const container = el.parentElement?.closest(within);
      out.within = container ? box(container) : null;
      out.inside = !!container && (() => {
        const c = container.getBoundingClientRect();
        return r.left >= c.left && r.right <= c.right && r.top >= c.top && r.bottom <= c.bottom;
      })();
    }
    return out;
  }, selector, within);
}

async function step(page, s, timeout, seen) {
  switch (s.do) {
    case "goto": {
      const response = await page.goto(s.url, { waitUntil: "load", timeout });
      return { status: response ? response.status() : null, url: page.url() };
    }
    case "goto_until":
      return gotoUntil(page, s, timeout);
    case "set_value": {
      const found = await page.$(s.selector);
      if (!found) throw new Error(`no element matches ${s.selector}`);
      await found.evaluate((el, value) => {
        el.value = value;
        el.dispatchEvent(new Event("input", { bubbles: true }));
        el.dispatchEvent(new Event("change", { bubbles: true }));
      }, String(s.value));
      return {};
    }
    case "location":
      return { url: page.url(), status: seen.status };
    case "timezone":
      await page.emulateTimezone(s.zone);
      return {};
    case "read": {
      const found = await page.$(s.selector);
      if (!found) throw new Error(`no element matches ${s.selector} on ${page.url()}`);
      return found.evaluate((el) => ({
        text: el.textContent,
        value: "value" in el ? el.value : null,
        attributes: Object.fromEntries([...el.attributes].map((a) => [a.name, a.value])),
      }));
    }
    case "fill": {
      await page.waitForSelector(s.selector, { timeout });
      await page.$eval(s.selector, (el) => {
        el.value = "";
      });
      await page.type(s.selector, String(s.value));
      return {};
    }
    case "tab_to": {
      const max = s.max ?? 40;
      for (let i = 1; i <= max; i += 1) {
        await page.keyboard.press("Tab");
        if (await focusedMatches(page, s.selector)) return { tabs: i };
      }
      throw new Error(`${s.selector} never had focus after ${max} Tab presses (focus: ${await describeFocus(page)})`);
    }
    case "await_focus": {
      try {
        await page.waitForFunction((sel) => document.activeElement?.matches(sel) ?? false, { timeout }, s.selector);
      } catch (err) {
        throw new Error(`${s.selector} never had focus (focus: ${await describeFocus(page)}): ${err.message}`);
      }
      return { focus: await describeFocus(page) };
    }
    case "type": {
      await page.keyboard.type(String(s.text));
      return { focus: await describeFocus(page) };
    }
    case "press":
      return maybeNavigating(page, s.navigates, timeout, () => page.keyboard.press(s.key));
    case "click":
      await page.waitForSelector(s.selector, { timeout });
      return maybeNavigating(page, s.navigates, timeout, () => page.click(s.selector));
    case "expect_text": {
      const text = await page.evaluate(() => document.body.innerText);
      if (!text.includes(s.text)) {
        throw new Error(`the page (${page.url()}) does not show ${JSON.stringify(s.text)}`);
      }
      return {};
    }
    case "axe":
      return runAxe(page);
    case "set_cookie":
      await page.setCookie({ url: s.url, name: s.name, value: s.value, httpOnly: true, sameSite: "Lax" });
      return {};
    case "cookies":
      return { cookies: await page.cookies() };
    case "html":
      return { url: page.url(), html: await page.content() };
    case "layout":
      return layout(page, s.selector, s.within ?? null);
    case "screenshot":
      await page.screenshot({ path: s.path, fullPage: true });
      return { path: s.path };
    default:
      throw new Error(`unknown step ${JSON.stringify(s.do)}`);
  }
}

async function main() {
  const scenario = readScenario();
  const timeout = scenario.timeout_ms ?? 60_000;
  const results = [];
  let error = null;
  const browser = await puppeteer.launch({
    executablePath: process.env.TOLLGATE_TEST_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // The machine has no network beyond loopback and runs as root.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout,
  });
  // Whatever happens, the browser goes when the deadline does.
  const deadline = setTimeout(() => {
    process.stdout.write(
      JSON.stringify({ ok: false, steps: results, error: `scenario exceeded ${timeout} ms` }) + "\n",
    );
    browser.process()?.kill("SIGKILL");
    process.exit(0);
  }, timeout);
  try {
    const page = await browser.newPage();
    const seen = trackStatus(page);
    await page.setViewport(scenario.viewport ?? { width: 1400, height: 1000 });
    page.setDefaultTimeout(timeout);
    for (const [index, s] of scenario.steps.entries()) {
      try {
        results.push({ do: s.do, ...(await step(page, s, timeout, seen)) });
      } catch (err) {
        error = `step ${index + 1} (${s.do}): ${err.message}`;
        break;
      }
    }
  } catch (err) {
    error = `browser: ${err.message}`;
  } finally {
    clearTimeout(deadline);
    await browser.close().catch(() => {});
  }
  process.stdout.write(JSON.stringify({ ok: error === null, steps: results, error }) + "\n");
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ ok: false, steps: [], error: `driver: ${err.message}` }) + "\n");
});
