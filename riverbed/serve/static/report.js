// A report's charts (riverbed report), drawn from the data inlined in the page: no server,
// no network. Each chart: its first text column along x, each numeric column a bar series.
(function () {
  "use strict";
  var element = document.getElementById("report-data");
  if (!element || typeof Plotly === "undefined") { return; }
  var data = JSON.parse(element.textContent);
  (data.charts || []).forEach(function (chart) {
    var target = document.getElementById("chart-" + chart.name);
    if (!target || !chart.rows.length) { return; }
    var numeric = chart.columns.filter(function (column) {
      return chart.rows.some(function (row) {
        var value = row[column];
        return value !== null && value !== "" && !isNaN(Number(value));
      });
    });
    var x = chart.columns.filter(function (column) { return numeric.indexOf(column) < 0; });
    var labels = chart.rows.map(function (row) {
      return x.map(function (column) { return row[column]; }).join(" · ");
    });
    var traces = numeric.filter(function (column) { return x.length || column !== numeric[0]; })
      .map(function (column) {
        return {
          type: "bar", name: column,
          x: x.length ? labels : chart.rows.map(function (row) { return row[numeric[0]]; }),
          y: chart.rows.map(function (row) { return row[column] === null ? null : Number(row[column]); })
        };
      });
    Plotly.newPlot(target, traces, {
      barmode: "group", height: 360, margin: {t: 20, r: 10, b: 80, l: 60}
    }, {displaylogo: false, responsive: true});
  });
})();
