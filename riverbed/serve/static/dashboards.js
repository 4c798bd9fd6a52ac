/* Riverbed's dashboards: draws every chart of a page in the browser with plotly.js.
 *
 * The page (server-rendered, riverbed/serve/templates/_dashboard.html) names its charts in
 * data- attributes: data-chart="<name>" (a chart of /api/charts/<name>, fetched with the page's
 * filters, <main data-query>, and its data-limit: the top rows of a ranking) or
 * data-health="<name>" (the pipeline's health, /api/health/...),
 * data-kind and data-measure; a filter's datalist may name its values' source,
 * data-choices="/api/choices/<name>". Nothing here is inline in the page: the Content-Security-Policy
 * allows scripts from this server's files only. Each chart also gets a table of its rows (the
 * accessible fallback) and a status line; a drill is a link (or a click on a bar or line) to
 * the same page with one more filter, so every view is a URL.
 *
 * Money comes from the API as exact decimal strings; it is turned into numbers here, for
 * drawing only.
 */
(function () {
  "use strict";

  var main = document.querySelector("main.dashboard");
  if (!main) return;
  var query = main.getAttribute("data-query") || "";
  var page = window.location.pathname;
  var fetched = {};
  var MONTHS = { type: "category" }; // "2026-09": a month, not a day of it
  var COLORS = { high: "#a8201f", medium: "#e0a526", low: "#2e8b57" };

  function getJSON(url) {
    if (!fetched[url]) {
      fetched[url] = fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          return r.json().then(function (body) {
            if (!r.ok) throw new Error(body.detail || r.status + " " + r.statusText);
            return body;
          });
        });
    }
    return fetched[url];
  }

  function num(v) { return v === null || v === undefined ? null : Number(v); }

  function withFilter(name, value) {
    var params = new URLSearchParams(query);
    params.set(name, value);
    return page + "?" + params.toString();
  }

  function groupBy(rows, key) {
    var groups = new Map();
    rows.forEach(function (r) {
      var k = r[key];
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(r);
    });
    return groups;
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function cellText(column, value) {
    if (value === null || value === undefined) return "";
    if (/_rate$|^retention$/.test(column)) return (Number(value) * 100).toFixed(1) + " %";
    if (column === "growth_pct") return Number(value).toFixed(1) + " %";
    if (/^(at|started_at|ended_at|since)$/.test(column)) return new Date(value * 1000).toISOString().replace(".000Z", "Z");
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  /* rows as an HTML table; links: {column: function(row) -> href} */
  function table(container, columns, rows, links, limit) {
    var wrap = el("div", { class: "table-wrap" });
    var t = el("table");
    var head = el("tr");
    columns.forEach(function (c) { head.appendChild(el("th", { scope: "col" }, c)); });
    t.appendChild(el("thead")).appendChild(head);
    var body = t.appendChild(el("tbody"));
    rows.slice(0, limit || rows.length).forEach(function (row) {
      var tr = body.appendChild(el("tr"));
      columns.forEach(function (c) {
        var td = tr.appendChild(el("td"));
        var text = cellText(c, row[c]);
        if (links && links[c]) td.appendChild(el("a", { href: links[c](row) }, text));
        else td.textContent = text;
      });
    });
    wrap.appendChild(t);
    container.replaceChildren(wrap);
  }

  function plot(node, traces, layout) {
    var base = {
      margin: { l: 56, r: 16, t: 12, b: 48 }, height: 320, autosize: true,
      legend: { orientation: "h", y: -0.2 }, font: { family: "system-ui, sans-serif", size: 12 },
      paper_bgcolor: "#fff", plot_bgcolor: "#fff", hovermode: "closest",
    };
    return Plotly.newPlot(node, traces, Object.assign(base, layout || {}),
      { responsive: true, displaylogo: false, displayModeBar: false });
  }

  function lines(rows, seriesKey, label, measure) {
    var traces = [];
    groupBy(rows, seriesKey).forEach(function (group, key) {
      traces.push({
        type: "scatter", mode: "lines+markers", name: label(group[0]),
        x: group.map(function (r) { return r.month; }),
        y: group.map(function (r) { return num(r[measure]); }),
        customdata: group.map(function () { return key; }),
      });
    });
    return traces;
  }

  function linkList(container, label, items) {
    if (!items.length) return;
    var p = el("p", { class: "drill-links" });
    p.appendChild(el("span", {}, label + " "));
    items.forEach(function (item, i) {
      if (i) p.appendChild(document.createTextNode(" · "));
      p.appendChild(el("a", { href: item.href }, item.text));
    });
    container.appendChild(p);
  }

  function fillList(id, values) {
    var list = document.getElementById(id);
    if (!list || list.children.length) return;
    Array.from(new Set(values.filter(Boolean))).sort().forEach(function (v) {
      list.appendChild(el("option", { value: v }));
    });
  }

  function onClick(node, navigate) {
    node.on("plotly_click", function (event) {
      var point = event.points && event.points[0];
      var href = point && navigate(point);
      if (href) window.location.assign(href);
    });
  }

  function growthBars(rows, label, key) {
    var ranked = rows.filter(function (r) { return r.growth_pct !== null; });
    var shown = ranked.length > 20 ? ranked.slice(0, 10).concat(ranked.slice(-10)) : ranked;
    shown = shown.slice().reverse(); // plotly draws the first bar at the bottom
    return [{
      type: "bar", orientation: "h",
      y: shown.map(label), x: shown.map(function (r) { return r.growth_pct; }),
      customdata: shown.map(function (r) { return r[key]; }),
      marker: { color: shown.map(function (r) { return r.growth_pct >= 0 ? "#2e8b57" : "#a8201f"; }) },
      hovertemplate: "%{y}: %{x:.1f} %<extra></extra>",
    }];
  }

  function movers(extra, data, key, label, hrefOf) {
    var byKey = new Map(data.rows.map(function (r) { return [r[key], r]; }));
    [["Top growing:", data.meta.top_growing || []], ["Top declining:", data.meta.top_declining || []]]
      .forEach(function (pair) {
        linkList(extra, pair[0], pair[1].map(function (k) {
          var row = byKey.get(k);
          return { text: label(row) + " (" + row.growth_pct.toFixed(1) + " %)", href: hrefOf(row) };
        }));
      });
  }

  /* each seller's return and refund rates, coloured by bucket; a click drills to the seller */
  function sellerRates(node, data) {
    var rows = data.rows.filter(function (r) { return r.return_rate !== null; })
      .sort(function (a, b) { return b.return_rate - a.return_rate; });
    var x = rows.map(function (r) { return "#" + r.seller_id; });
    var names = rows.map(function (r) { return r.seller; });
    return plot(node, [
      { type: "bar", name: "return rate", x: x, y: rows.map(function (r) { return r.return_rate * 100; }),
        customdata: rows.map(function (r) { return r.seller_id; }),
        marker: { color: rows.map(function (r) { return COLORS[r.bucket] || "#888"; }) },
        text: names, textposition: "none", hovertemplate: "%{text} %{x}: %{y:.1f} % returned<extra></extra>" },
      { type: "scatter", mode: "markers", name: "refund rate", x: x,
        y: rows.map(function (r) { return r.refund_rate * 100; }), marker: { color: "#1d2430", symbol: "diamond" },
        customdata: rows.map(function (r) { return r.seller_id; }),
        hovertemplate: "%{x}: %{y:.1f} % refunded<extra></extra>" },
    ], { yaxis: { title: { text: "% of items sold" } }, xaxis: { type: "category", title: { text: "seller" } },
      showlegend: true, legend: { orientation: "h", y: 1.12 }, margin: { l: 56, r: 16, t: 36, b: 48 } }).then(function () {
      onClick(node, function (p) { return withFilter("seller", p.customdata); });
    });
  }

  function productLabel(r) { return r.product + " #" + r.product_id; }

  /* chart name -> draw(node, data, figure): returns a promise or nothing */
  var CHARTS = {
    revenue_by_category: function (node, data, fig) {
      var measure = node.getAttribute("data-measure") || "revenue";
      var traces = lines(data.rows, "category", function (r) { return r.category; }, measure);
      fillList("categories", data.rows.map(function (r) { return r.category; }));
      if (measure === "revenue") {
        var cats = Array.from(groupBy(data.rows, "category").keys());
        linkList(fig.querySelector(".chart-extra"), "Drill into a category:", cats.map(function (c) {
          return { text: c, href: withFilter("category", c) };
        }));
      }
      return plot(node, traces, { yaxis: { title: { text: measure }, rangemode: "tozero" }, xaxis: MONTHS }).then(function () {
        onClick(node, function (p) { return withFilter("category", p.customdata); });
      });
    },
    revenue_by_product: function (node, data) {
      var measure = node.getAttribute("data-measure") || "revenue";
      return plot(node, lines(data.rows, "product_id", productLabel, measure),
        { yaxis: { title: { text: measure }, rangemode: "tozero" }, xaxis: MONTHS, height: 420,
          legend: { orientation: "v", x: 1.02, y: 1, font: { size: 10 } }, margin: { l: 56, r: 8, t: 12, b: 40 } });
    },
    monthly_growth: function (node, data) {
      var rows = data.rows.filter(function (r) { return r.growth_pct !== null; });
      return plot(node, [{
        type: "bar", x: rows.map(function (r) { return r.month + (r.partial ? " (partial)" : ""); }),
        y: rows.map(function (r) { return r.growth_pct; }),
        marker: { color: rows.map(function (r) { return r.partial ? "#7aa7d8" : "#1f5fa8"; }) },
        hovertemplate: "%{x}: %{y:.1f} %<extra></extra>",
      }], { yaxis: { title: { text: "growth %" } }, xaxis: { type: "category" } });
    },
    category_growth: function (node, data, fig) {
      movers(fig.querySelector(".chart-extra"), data, "category", function (r) { return r.category; },
        function (r) { return withFilter("category", r.category); });
      return plot(node, growthBars(data.rows, function (r) { return r.category; }, "category"),
        { margin: { l: 120, r: 16, t: 12, b: 40 }, xaxis: { title: { text: "growth %" } } }).then(function () {
        onClick(node, function (p) { return withFilter("category", p.customdata); });
      });
    },
    product_growth: function (node, data, fig) {
      movers(fig.querySelector(".chart-extra"), data, "product_id", productLabel,
        function (r) { return withFilter("category", r.category); });
      return plot(node, growthBars(data.rows, productLabel, "category"),
        { margin: { l: 200, r: 16, t: 12, b: 40 }, height: 420, xaxis: { title: { text: "growth %" } } });
    },
    seller_performance: function (node, data) {
      /* the rows' regions only until /api/choices answers (fillChoices replaces them) */
      fillList("regions", data.rows.map(function (r) { return r.seller_region; }));
      if (node.getAttribute("data-kind") !== "table") return sellerRates(node, data);
      table(node, data.columns, data.rows, {
        seller_id: function (r) { return withFilter("seller", r.seller_id); },
        seller: function (r) { return withFilter("seller", r.seller_id); },
      });
    },
    seller_buckets_by_month: function (node, data) {
      var traces = [];
      groupBy(data.rows, "bucket").forEach(function (rows, bucket) {
        traces.push({ type: "bar", name: bucket, marker: { color: COLORS[bucket] },
          x: rows.map(function (r) { return r.month; }), y: rows.map(function (r) { return r.sellers; }) });
      });
      return plot(node, traces, { barmode: "stack", yaxis: { title: { text: "sellers" } }, xaxis: { type: "category" } });
    },
    seller_returns_by_reason: function (node, data) {
      var x = data.rows.map(function (r) { return r.reason; });
      return plot(node, [
        { type: "bar", name: "returns", x: x, y: data.rows.map(function (r) { return r.return_requests; }) },
        { type: "bar", name: "refunded", x: x, y: data.rows.map(function (r) { return r.return_refunds; }) },
      ], { barmode: "group" });
    },
    spending_distribution: function (node, data) {
      return plot(node, [{ type: "bar", x: data.rows.map(function (r) { return r.bucket; }),
        y: data.rows.map(function (r) { return r.customers; }) }],
        { xaxis: { type: "category", title: { text: "spent" } }, yaxis: { title: { text: "customers" } } });
    },
    transaction_counts: function (node, data) {
      return plot(node, [{ type: "bar", x: data.rows.map(function (r) { return String(r.orders); }),
        y: data.rows.map(function (r) { return r.customers; }) }],
        { xaxis: { type: "category", title: { text: "orders" } }, yaxis: { title: { text: "customers" } } });
    },
    new_vs_returning: function (node, data) {
      var x = data.rows.map(function (r) { return r.month; });
      return plot(node, [
        { type: "bar", name: "new", x: x, y: data.rows.map(function (r) { return r.new_customers; }) },
        { type: "bar", name: "returning", x: x, y: data.rows.map(function (r) { return r.returning_customers; }) },
      ], { barmode: "stack", xaxis: { type: "category" } });
    },
    cohort_retention: function (node, data) {
      var cohorts = Array.from(new Set(data.rows.map(function (r) { return r.cohort; }))).sort();
      var offsets = Array.from(new Set(data.rows.map(function (r) { return r.months_since; })))
        .sort(function (a, b) { return a - b; });
      var z = cohorts.map(function () { return offsets.map(function () { return null; }); });
      data.rows.forEach(function (r) {
        z[cohorts.indexOf(r.cohort)][offsets.indexOf(r.months_since)] = Math.round(r.retention * 1000) / 10;
      });
      return plot(node, [{ type: "heatmap", x: offsets.map(String), y: cohorts, z: z, colorscale: "Blues", reversescale: true,
        texttemplate: "%{z}", hovertemplate: "cohort %{y}, +%{x} months: %{z} %<extra></extra>" }],
        { xaxis: { title: { text: "months since first order" }, type: "category" },
          yaxis: { type: "category", autorange: "reversed" } });
    },
    customer_refunds: function (node, data, fig) {
      table(node, data.columns, data.rows);
      var total = data.meta.rows_total || data.rows.length;
      if (total > data.rows.length) {
        fig.querySelector(".chart-extra").appendChild(
          el("p", { class: "note" }, "The " + data.rows.length + " most refunded of " + total + " customers; the CSV has them all."));
      }
    },
  };

  function timeline(run) {
    var events = run.events.slice().sort(function (a, b) { return a.seq - b.seq; });
    var start = run.run.started_at, end = run.run.ended_at || Date.now() / 1000;
    var bars = [];
    events.forEach(function (e, i) {
      if (e.event !== "entered") return;
      var next = events.slice(i + 1).find(function (n) { return n.event === "entered"; });
      var until = next ? next.ts : end;
      var failed = events.slice(i + 1, next ? events.indexOf(next) : events.length)
        .some(function (n) { return n.state === e.state && /fail/.test(n.event); });
      bars.push({ state: e.state, from: e.ts - start, seconds: Math.max(until - e.ts, 0.001), failed: failed });
    });
    return bars;
  }

  /* health part -> [url, draw(node, body, figure)] */
  var HEALTH = {
    lag: ["/api/health/lag", function (node, rows) {
      return plot(node, [{ type: "scatter", mode: "lines+markers", name: "lag",
        x: rows.map(function (r) { return new Date(r.at * 1000); }), y: rows.map(function (r) { return r.lag_seconds; }) }],
        { yaxis: { title: { text: "seconds" }, rangemode: "tozero" } });
    }],
    timeline: ["/api/health/runs?limit=1", function (node, runs, fig) {
      if (!runs.length) return null;
      return getJSON("/api/health/runs/" + encodeURIComponent(runs[0].run_id)).then(function (run) {
        var bars = timeline(run);
        fig.querySelector(".chart-status").textContent = "Run " + run.run.run_id + ": " + run.run.status + ".";
        fillTable(fig, ["state", "from", "seconds", "failed"], bars);
        return plot(node, [{ type: "bar", orientation: "h", y: bars.map(function (b) { return b.state; }),
          base: bars.map(function (b) { return b.from; }), x: bars.map(function (b) { return b.seconds; }),
          marker: { color: bars.map(function (b) { return b.failed ? "#a8201f" : "#1f5fa8"; }) },
          hovertemplate: "%{y}: %{x:.2f} s<extra></extra>" }],
          { margin: { l: 120, r: 16, t: 12, b: 40 }, yaxis: { autorange: "reversed", type: "category" },
            xaxis: { title: { text: "seconds from the run's start" } } });
      });
    }],
    quality: ["/api/health/quality", function (node, rows) {
      var traces = [];
      groupBy(rows, "rule").forEach(function (group) {
        var label = group[0].table + ": " + group[0].rule;
        traces.push({ type: "scatter", mode: "lines+markers", name: label,
          x: group.map(function (r) { return new Date(r.at * 1000); }), y: group.map(function (r) { return r.failed; }) });
      });
      return plot(node, traces, { yaxis: { title: { text: "failed rows" }, rangemode: "tozero" }, showlegend: traces.length <= 12 });
    }],
    quarantine: ["/api/health/quality", function (node, rows, fig) {
      var batches = new Map();
      rows.forEach(function (r) { batches.set(r.table + "/" + r.batch_id, r); });
      var list = Array.from(batches.values());
      fillTable(fig, ["at", "table", "batch_id", "rows_in", "rows_quarantined"], list);
      var traces = [];
      groupBy(list, "table").forEach(function (group, name) {
        traces.push({ type: "bar", name: name, x: group.map(function (r) { return new Date(r.at * 1000); }),
          y: group.map(function (r) { return r.rows_quarantined; }) });
      });
      return plot(node, traces, { barmode: "stack", yaxis: { title: { text: "rows" } } });
    }, true],
    runs: ["/api/health/runs?limit=20", function (node, rows) {
      table(node, ["run_id", "status", "trigger", "started_at", "ended_at", "failed_state", "rows_in",
        "rows_quarantined", "loaded_rows", "error"], rows);
    }],
    alarms: ["/api/health/alarms", function (node, rows) {
      table(node, ["alarm", "state", "since", "value", "reason"], rows);
    }],
  };

  function fillTable(fig, columns, rows) {
    var wrap = fig.querySelector(".table-fallback .table-wrap");
    if (wrap) table(wrap, columns, rows);
  }

  function settle(fig, count, promise, empty) {
    var status = fig.querySelector(".chart-status");
    return Promise.resolve(promise).then(function () {
      if (status.textContent === "Loading…") {
        status.textContent = count ? count + (count === 1 ? " row." : " rows.") : (empty || "No data for these filters.");
      }
      fig.setAttribute("data-state", count ? "drawn" : "empty");
    });
  }

  function failed(fig, error) {
    fig.querySelector(".chart-status").textContent = "Could not load this chart: " + error.message;
    fig.querySelector(".chart-status").classList.add("error");
    fig.setAttribute("data-state", "error");
  }

  function drawChart(node) {
    var fig = node.closest("figure");
    var name = node.getAttribute("data-chart");
    var params = new URLSearchParams(query);
    if (node.getAttribute("data-limit")) params.set("limit", node.getAttribute("data-limit"));
    var asked = params.toString();
    return getJSON("/api/charts/" + encodeURIComponent(name) + (asked ? "?" + asked : ""))
      .then(function (data) {
        if (node.getAttribute("data-kind") !== "table") fillTable(fig, data.columns, data.rows);
        var drawn = data.rows.length ? CHARTS[name](node, data, fig) : null;
        return settle(fig, data.rows.length, drawn);
      })
      .catch(function (error) { failed(fig, error); });
  }

  /* a filter's list from /api/choices (data-choices): every value the reader may see, where
   * a chart's rows hold only those it shows */
  function fillChoices(list) {
    return getJSON(list.getAttribute("data-choices")).then(function (body) {
      list.replaceChildren();
      fillList(list.id, body.values);
    }, function () { /* no list: the filter still takes typed text */ });
  }

  function drawHealth(node) {
    var fig = node.closest("figure");
    var part = HEALTH[node.getAttribute("data-health")];
    return getJSON(part[0]).then(function (body) {
      var rows = Array.isArray(body) ? body : [body];
      if (node.getAttribute("data-kind") !== "table" && !part[2] && part[0].indexOf("runs") < 0) {
        fillTable(fig, rows.length ? Object.keys(rows[0]).filter(function (k) { return k !== "samples"; }) : [], rows);
      }
      var drawn = rows.length ? part[1](node, rows, fig) : null;
      return settle(fig, rows.length, drawn, "Nothing recorded yet.");
    }).catch(function (error) { failed(fig, error); });
  }

  function start() {
    var all = [];
    document.querySelectorAll("[data-chart]").forEach(function (node) { all.push(drawChart(node)); });
    document.querySelectorAll("[data-health]").forEach(function (node) { all.push(drawHealth(node)); });
    document.querySelectorAll("datalist[data-choices]").forEach(function (list) { all.push(fillChoices(list)); });
    Promise.all(all).then(function () { main.setAttribute("data-ready", "true"); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
