// Measures how pages lay out at given window sizes, for the page layout
// tests (tests/it/sre_layout_chromium.rs). Reads
//   {"urls": ["http://..."], "viewports": [{"width": 390, "height": 844}],
//    "timeout_ms": 60000}
// on stdin and prints one JSON line:
//   {"ok": bool, "error": ..., "pages": [{"url", "viewport", "status",
//     "document": {"scroll_width", "client_width"},
//     "main": {"scroll_width", "client_width"},
//     "overflowing": ["<what>: <scroll> > <client>"],   panels and cards whose
//                                                         content is wider than
//                                                         they are
//     "labels": [{"text", "lines"}]}]}                   each filter label's
//                                                         text and on how many
//                                                         lines it is drawn
// Debian's Chromium through puppeteer-core, as drive.mjs.
import puppeteer from "puppeteer-core";
import { readFileSync } from "node:fs";

function measure() {
  const doc = document.documentElement;
  const main = document.querySelector("main") ?? document.body;
  const overflowing = [];
  for (const el of document.querySelectorAll(".panel, .card, .filters, main")) {
    if (el.scrollWidth > el.clientWidth + 1) {
      const name = el.id || el.querySelector("h2, table[id]")?.textContent?.trim().slice(0, 40)
        || el.querySelector("table[id]")?.id || el.className;
      overflowing.push(`${el.tagName.toLowerCase()}.${el.className} (${name}): ${el.scrollWidth} > ${el.clientWidth}`);
    }
  }
  const labels = [];
  for (const label of document.querySelectorAll(".filters label")) {
    // The label's text: everything before its field.
    const field = label.querySelector("input, select, textarea");
    const range = document.createRange();
    range.setStart(label, 0);
    if (field) {
      range.setEndBefore(field);
    } else {
      range.setEnd(label, label.childNodes.length);
    }
    const tops = new Set();
    for (const rect of range.getClientRects()) {
      if (rect.width > 0 && rect.height > 0) {
        tops.add(Math.round(rect.top));
      }
    }
    labels.push({ text: range.toString().trim().replace(/\s+/g, " "), lines: tops.size });
  }
  return {
    document: { scroll_width: doc.scrollWidth, client_width: doc.clientWidth },
    main: { scroll_width: main.scrollWidth, client_width: main.clientWidth },
    overflowing,
    labels,
  };
}

async function main() {
  const input = JSON.parse(readFileSync(0, "utf8"));
  const timeout = input.timeout_ms ?? 60_000;
  const pages = [];
  let error = null;
  const browser = await puppeteer.launch({
    executablePath: process.env.TOLLGATE_TEST_CHROMIUM || "/usr/bin/chromium",
    headless: true,
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
  const deadline = setTimeout(() => {
    process.stdout.write(JSON.stringify({ ok: false, pages, error: `exceeded ${timeout} ms` }) + "\n");
    browser.process()?.kill("SIGKILL");
    process.exit(0);
  }, timeout);
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(timeout);
    for (const viewport of input.viewports) {
      await page.setViewport(viewport);
      for (const url of input.urls) {
        const answer = await page.goto(url, { waitUntil: "load" });
        pages.push({ url, viewport, status: answer?.status() ?? 0, ...(await page.evaluate(measure)) });
      }
    }
  } catch (err) {
    error = err.message;
  } finally {
    clearTimeout(deadline);
    await browser.close().catch(() => {});
  }
  process.stdout.write(JSON.stringify({ ok: error === null, pages, error }) + "\n");
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ ok: false, pages: [], error: `driver: ${err.message}` }) + "\n");
});
