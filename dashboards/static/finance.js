// Finance cost page: a bar chart of the largest groups from the data the
// server embedded (#cost-data); records the plotted bar count on the canvas
// (data-points) so tests can tell an empty chart from a broken one.
//
// Axis and tooltip labels read as the tables do (dashboards/src/display.rs,
// `Money`): US dollars, cents, thousands separators.
const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const usdLabel = (value) => {
  const v = Number(value);
  return v !== 0 && Math.abs(v) < 0.005 ? (v < 0 ? "-<$0.01" : "<$0.01") : usd.format(v);
};
const usdTooltip = (ctx) => (ctx.dataset.label ? ctx.dataset.label + ": " : "") + usdLabel(ctx.parsed.y);

(function () {
  "use strict";
  const source = document.getElementById("cost-data");
  const canvas = document.getElementById("cost-chart");
  if (!source || !canvas || typeof Chart === "undefined") {
    return;
  }
  const data = JSON.parse(source.textContent);
  // Values are exact decimal strings; the chart only needs their magnitude.
  const values = (data.values || []).map(Number);
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels || [],
      datasets: [{ label: "USD", data: values, backgroundColor: "#2563eb" }],
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      scales: { y: { ticks: { callback: usdLabel } } },
      plugins: { legend: { display: false }, tooltip: { callbacks: { label: usdTooltip } } },
    },
  });
  canvas.dataset.points = String(values.length);
})();

// Budget burn-down page: cumulative spend against the limit, the ideal
// line and the forecast, from the data the server embedded
// (#burndown-data). The values are exact decimal strings; the chart only
// needs their magnitude. Records on the canvas how many buckets it plotted
// (data-points), whether Chart.js holds a chart for it (data-chart) and how
// many pixels were painted (data-painted-pixels), so tests can tell a
// drawn chart from a blank canvas.
(function () {
  "use strict";
  const source = document.getElementById("burndown-data");
  const canvas = document.getElementById("burndown-chart");
  if (!source || !canvas || typeof Chart === "undefined") {
    return;
  }
  const data = JSON.parse(source.textContent);
  const numbers = (list) => (list || []).map((v) => (v === null ? null : Number(v)));
  const line = (label, values, color, dash) => ({
    label,
    data: numbers(values),
    borderColor: color,
    backgroundColor: color,
    borderDash: dash || [],
    pointRadius: 2,
    spanGaps: false,
  });
  new Chart(canvas, {
    type: "line",
    data: {
      labels: data.labels || [],
      datasets: [
        line("spent (cumulative)", data.cumulative, "#2563eb"),
        line("limit", data.limit, "#dc2626", [2, 2]),
        line("ideal", data.ideal, "#16a34a", [6, 4]),
        line("forecast", data.forecast, "#d97706", [3, 3]),
      ],
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      scales: { y: { beginAtZero: true, ticks: { callback: usdLabel } } },
      plugins: { tooltip: { callbacks: { label: usdTooltip } } },
    },
  });
  const record = () => {
    canvas.dataset.points = String((data.labels || []).length);
    canvas.dataset.chart = Chart.getChart(canvas) ? "ready" : "missing";
    const ctx = canvas.getContext("2d");
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) {
      if (pixels[i] !== 0) {
        painted += 1;
      }
    }
    canvas.dataset.paintedPixels = String(painted);
  };
  record();
  requestAnimationFrame(record);
})();
