// Times in the viewer's time zone: every <time datetime="…Z"> the server
// rendered in UTC (dashboards/src/display.rs, `Instant`) gets its text
// rewritten into the browser's time zone at the same precision
// ("2026-12-01 05:00 EST"); the title keeps the UTC time. Without this
// script the pages show UTC.
(function () {
  "use strict";
  if (typeof Intl === "undefined" || !Intl.DateTimeFormat) {
    return;
  }
  const formats = {};
  const formatFor = (precision) => {
    if (!formats[precision]) {
      const options = {
        year: "numeric",
        month: "2-digit",
        day: "2-digit",
        hour: "2-digit",
        minute: "2-digit",
        hourCycle: "h23",
        timeZoneName: "short",
      };
      if (precision !== "minute") {
        options.second = "2-digit";
      }
      if (precision === "millisecond") {
        options.fractionalSecondDigits = 3;
      }
      formats[precision] = new Intl.DateTimeFormat(undefined, options);
    }
    return formats[precision];
  };
  // The server's text says how precise it is: "10:00 UTC", "10:00:00 UTC"
  // or "10:00:00.123 UTC".
  const precisionOf = (text) => {
    if (/\d:\d\d:\d\d\.\d/.test(text)) {
      return "millisecond";
    }
    return /\d:\d\d:\d\d/.test(text) ? "second" : "minute";
  };
  const localText = (date, precision) => {
    const parts = {};
    for (const p of formatFor(precision).formatToParts(date)) {
      parts[p.type] = p.value;
    }
    let clock = parts.hour + ":" + parts.minute;
    if (precision !== "minute") {
      clock += ":" + parts.second;
    }
    if (precision === "millisecond") {
      clock += "." + parts.fractionalSecond;
    }
    return parts.year + "-" + parts.month + "-" + parts.day + " " + clock + " " + parts.timeZoneName;
  };
  const rewrite = (root) => {
    for (const el of root.querySelectorAll("time[datetime]")) {
      if (el.dataset.local === "1") {
        continue;
      }
      const date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) {
        continue;
      }
      if (!el.title) {
        el.title = el.textContent;
      }
      el.textContent = localText(date, precisionOf(el.textContent));
      el.dataset.local = "1";
    }
  };
  rewrite(document);
})();
