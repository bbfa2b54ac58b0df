// SRE latency page: hands the chart data the server embedded in the page
// (#latency-data) to Chart.js, then records on each canvas how many points
// it plotted (data-points) and in how many unbroken runs Chart.js drew its
// lines (data-segments), so tests and people can tell an empty chart from
// a broken one, and a gap from a line across it.
(function () {
  "use strict";

  // Editing a custom time switches the range menu to "Custom".
  const range = document.getElementById("range");
  for (const id of ["from", "to"]) {
    const input = document.getElementById(id);
    if (input && range) {
      input.addEventListener("change", function () { range.value = "custom"; });
    }
  }

  const source = document.getElementById("latency-data");
  if (!source || typeof Chart === "undefined") {
    return;
  }
  const data = JSON.parse(source.textContent);
  const labels = data.labels || [];
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#6b7280";

  for (const chart of data.charts || []) {
    const canvas = document.getElementById(chart.id);
    if (!canvas) {
      continue;
    }
    const datasets = chart.datasets.map(function (d) {
      return {
        label: d.label,
        data: d.data,
        borderColor: d.color,
        backgroundColor: d.color,
        borderWidth: 2,
        pointRadius: labels.length > 60 ? 0 : 2.5,
        pointHoverRadius: 4,
        // A bucket without calls is a break in the line, and points are
        // joined by straight lines: no curve between two values suggests
        // latencies nobody measured (a traffic outage looked like steady
        // latency).
        spanGaps: false,
        tension: 0,
      };
    });
    const drawn = new Chart(canvas, {
      type: "line",
      data: { labels: labels, datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: function (ctx) {
                return ctx.dataset.label + ": " + ctx.parsed.y.toFixed(1) + " ms";
              },
            },
          },
        },
        scales: {
          x: { grid: { display: false }, ticks: { maxTicksLimit: 7, maxRotation: 0 } },
          y: { beginAtZero: true, grid: { color: "#eef0f3" } },
        },
      },
    });
    let points = 0;
    for (const d of chart.datasets) {
      points += d.data.filter(function (v) { return v !== null; }).length;
    }
    canvas.dataset.points = String(points);
    let segments = 0;
    drawn.data.datasets.forEach(function (_, i) {
      const line = drawn.getDatasetMeta(i).dataset;
      segments += line ? line.segments.length : 0;
    });
    canvas.dataset.segments = String(segments);
  }
})();
