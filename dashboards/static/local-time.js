// Times in the viewer's time zone: every <time datetime="…Z"> the server
// rendered in UTC (dashboards/src/display.rs, `Instant`) gets its text
// rewritten into the browser's time zone at the same precision
// ("2026-12-01 05:00 EST"); the title keeps the UTC time. The same for
// the server's SVG charts (dashboards/src/svg.rs): an axis label
// <text data-utc="…Z"> gets month, day and minute in the viewer's zone
// (its <title> keeps UTC), a tooltip <title data-utc="…Z …Z"> gets each
// UTC time it names as local time followed by the UTC one. And for
// <input type="datetime-local" data-utc>, which the server fills and reads
// in UTC: shown in the viewer's zone (a `.tz-name` in its label says
// which), the UTC value in its title, and sent as UTC again. Without this
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
  const partsOf = (date, precision) => {
    const parts = {};
    for (const p of formatFor(precision).formatToParts(date)) {
      parts[p.type] = p.value;
    }
    return parts;
  };
  const localText = (date, precision) => {
    const parts = partsOf(date, precision);
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
  // "12-01 05:00 EST" under a chart's axis.
  const axisText = (date) => {
    const parts = partsOf(date, "minute");
    return parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + " " + parts.timeZoneName;
  };
  const UTC_STAMP = /\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d(?:\.\d{3})?)? UTC/g;
  const rewriteCharts = (root) => {
    for (const el of root.querySelectorAll("svg text[data-utc]")) {
      const date = new Date(el.getAttribute("data-utc"));
      const text = [...el.childNodes].find((n) => n.nodeType === Node.TEXT_NODE);
      if (isNaN(date.getTime()) || !text || el.dataset.local === "1") {
        continue;
      }
      text.data = axisText(date);
      el.dataset.local = "1";
    }
    for (const el of root.querySelectorAll("svg title[data-utc]")) {
      if (el.dataset.local === "1") {
        continue;
      }
      const instants = el.getAttribute("data-utc").split(" ");
      let i = 0;
      el.textContent = el.textContent.replace(UTC_STAMP, (utc) => {
        const date = new Date(instants[i]);
        i += 1;
        return isNaN(date.getTime()) ? utc : localText(date, precisionOf(utc)) + " (" + utc + ")";
      });
      el.dataset.local = "1";
    }
  };
  const pad = (n) => String(n).padStart(2, "0");
  // datetime-local values: "2026-12-01T10:00", in the viewer's zone or UTC.
  const localValue = (d) =>
    d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  const utcValue = (d) => d.toISOString().slice(0, 16);
  const rewriteInputs = (root) => {
    const forms = new Set();
    for (const input of root.querySelectorAll("input[type=datetime-local][data-utc]")) {
      if (input.dataset.local === "1") {
        continue;
      }
      if (input.value) {
        const date = new Date(input.value + "Z");
        if (!isNaN(date.getTime())) {
          input.value = localValue(date);
        }
      }
      const note = () => {
        const date = new Date(input.value);
        input.title = isNaN(date.getTime()) ? "" : utcValue(date).replace("T", " ") + " UTC";
      };
      note();
      input.addEventListener("input", note);
      input.addEventListener("change", note);
      const zone = input.closest("label")?.querySelector(".tz-name");
      if (zone) {
        zone.textContent = partsOf(new Date(), "minute").timeZoneName;
      }
      input.dataset.local = "1";
      if (input.form) {
        forms.add(input.form);
      }
    }
    // The server reads these fields as UTC: send them so.
    for (const form of forms) {
      form.addEventListener("formdata", (event) => {
        for (const input of form.querySelectorAll("input[type=datetime-local][data-utc]")) {
          const date = new Date(input.value);
          if (input.name && input.value && !isNaN(date.getTime())) {
            event.formData.set(input.name, utcValue(date));
          }
        }
      });
    }
  };
  rewrite(document);
  rewriteCharts(document);
  rewriteInputs(document);
})();
