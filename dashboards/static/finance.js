// Finance cost page: a bar chart of the largest groups from the data the
// server embedded (#cost-data); records the plotted bar count on the canvas
// (data-points) so tests can tell an empty chart from a broken one.
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
    options: { responsive: true, maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } } },
  });
  canvas.dataset.points = String(values.length);
})();
