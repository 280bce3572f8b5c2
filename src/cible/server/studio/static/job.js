// cible studio, a job's page: the live log (pre#job-log, polled from an offset) and the metric charts
// (div#metric-charts, one uPlot line chart per metric, x = step). Both stop once the job has ended and
// there is nothing more to read. Data comes from the page's data-* attributes (no inline script).
(function () {
  "use strict";
  const LOG_EVERY_MS = 1000;
  const METRICS_EVERY_MS = 2000;
  const RETRY_MS = 5000;
  const CHUNK = 1 << 20; // the server's read size: a full chunk means more is waiting
  const KEEP_CHARS = 2000000; // the log kept on the page (the rest: "Download the log")

  function terminalSet(el) {
    // The statuses after which a job changes no more (cible.core.lifecycle.jobs.TERMINAL), from the page.
    return new Set((el.dataset.terminal || "Completed Failed Canceled").split(/\s+/).filter(Boolean));
  }

  // -- the log --------------------------------------------------------------------------------------
  function followLog(pre) {
    const url = pre.dataset.logUrl;
    const terminal = terminalSet(pre);
    const note = document.getElementById("log-note");
    const decoder = new TextDecoder("utf-8");
    let offset = 0;
    let status = pre.dataset.status || "";
    let kept = 0;

    function say(text) { if (note) note.textContent = text; }

    function append(text) {
      if (!text) return;
      const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
      pre.appendChild(document.createTextNode(text));
      kept += text.length;
      if (kept > KEEP_CHARS) { // a huge log: keep its end only
        const tail = pre.textContent.slice(-KEEP_CHARS / 2);
        pre.textContent = tail;
        kept = tail.length;
        say("Showing the end of a long log; download it for the whole.");
      }
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }

    async function tick() {
      let got = 0;
      try {
        const response = await window.studio.getJSON(url + "?offset=" + offset);
        const bytes = new Uint8Array(await response.arrayBuffer());
        got = bytes.byteLength;
        const next = Number(response.headers.get("X-Cible-Next-Offset"));
        offset = Number.isFinite(next) ? next : offset + got;
        status = response.headers.get("X-Cible-Job-Status") || status;
        append(decoder.decode(bytes, { stream: true }));
        delete pre.dataset.error;
      } catch (error) {
        pre.dataset.error = String(error && error.message || error);
        setTimeout(tick, RETRY_MS);
        return;
      }
      pre.dataset.offset = String(offset);
      pre.dataset.status = status;
      if (terminal.has(status) && got === 0) { // ended, and everything read: done
        append(decoder.decode());
        pre.dataset.done = "true";
        say(offset === 0 ? "This job wrote no log." : "The job has ended (" + status + "); this is its whole log.");
        return;
      }
      if (offset > 0 && !terminal.has(status)) say("Following the log as the job writes it…");
      else if (offset === 0 && !terminal.has(status)) say("No log yet: the job has not written any (" + status + ").");
      setTimeout(tick, got >= CHUNK ? 0 : LOG_EVERY_MS);
    }

    tick();
  }

  // -- the metric charts ----------------------------------------------------------------------------
  function followMetrics(box) {
    const url = box.dataset.metricsUrl;
    const note = document.getElementById("metrics-note");
    const charts = new Map(); // key -> {plot, latest, u}

    function say(text) { if (note) { note.textContent = text; note.hidden = !text; } }

    function format(value) {
      if (value === null || value === undefined) return "not a number";
      return Math.abs(value) >= 1e5 || (value !== 0 && Math.abs(value) < 1e-3) ? value.toExponential(4)
        : String(Math.round(value * 1e6) / 1e6);
    }

    function describe(key, series) {
      const n = series.values.length;
      if (!n) return key + ": no values yet.";
      if (n === 1) return format(series.values[0]) + " (logged once, at step " + series.steps[0] + ")";
      return "Latest " + format(series.values[n - 1]) + " at step " + series.steps[n - 1] + " (" + n +
        (n === 1 ? " value)" : " values)");
    }

    function chartFor(key) {
      let chart = charts.get(key);
      if (chart) return chart;
      const wrap = document.createElement("div");
      wrap.className = "chart";
      wrap.dataset.metric = key;
      const title = document.createElement("h3");
      title.textContent = key;
      const latest = document.createElement("p");
      latest.className = "metric-latest";
      const plot = document.createElement("div");
      plot.className = "plot";
      plot.setAttribute("aria-hidden", "true"); // the text above says what the curve shows
      wrap.append(title, latest, plot);
      // Keep the charts in key order.
      const after = Array.from(box.children).find((el) => (el.dataset.metric || "") > key);
      box.insertBefore(wrap, after || null);
      chart = { wrap: wrap, plot: plot, latest: latest, u: null };
      charts.set(key, chart);
      return chart;
    }

    function draw(key, series) {
      const chart = chartFor(key);
      chart.latest.textContent = describe(key, series);
      const data = [series.steps, series.values];
      // One value is a number, not a curve: it is said above, and a chart comes with the second.
      chart.wrap.classList.toggle("single", series.values.length < 2);
      if (series.values.length < 2 && !chart.u) return;
      if (typeof window.uPlot !== "function") return; // the text stays
      if (chart.u) { chart.u.setData(data); return; }
      const width = Math.max(chart.plot.clientWidth || chart.wrap.clientWidth - 16 || 400, 240);
      chart.u = new window.uPlot({
        width: width, height: 220, legend: { show: false }, cursor: { drag: { x: true, y: false } },
        scales: { x: { time: false } },
        axes: [{ label: "step", stroke: "#57606a" }, { stroke: "#57606a" }],
        series: [{ label: "step" }, { label: key, stroke: "#0550ae", width: 2, spanGaps: true,
                                      points: { show: series.values.length < 60 } }],
      }, data, chart.plot);
    }

    window.addEventListener("resize", function () {
      charts.forEach(function (chart) {
        if (chart.u) chart.u.setSize({ width: Math.max(chart.plot.clientWidth || 400, 240), height: 220 });
      });
    });

    async function tick() {
      let body;
      try {
        body = await (await window.studio.getJSON(url)).json();
        delete box.dataset.error;
      } catch (error) {
        box.dataset.error = String(error && error.message || error);
        setTimeout(tick, RETRY_MS);
        return;
      }
      const keys = Object.keys(body.metrics || {}).sort();
      keys.forEach((key) => draw(key, body.metrics[key]));
      box.dataset.drawn = String(charts.size);
      box.dataset.status = body.status || "";
      if (body.unavailable) say(body.unavailable);
      else if (!keys.length) say(body.terminal ? "This job logged no metrics." : "No metrics logged yet.");
      else say(body.more ? "Showing " + keys.length + " metrics; " + body.more + " more are in the run." : "");
      if (body.terminal || (body.unavailable && body.retry === false)) { box.dataset.done = "true"; return; }
      setTimeout(tick, METRICS_EVERY_MS);
    }

    tick();
  }

  function start() {
    const pre = document.getElementById("job-log");
    if (pre && pre.dataset.logUrl) followLog(pre);
    const box = document.getElementById("metric-charts");
    if (box && box.dataset.metricsUrl) followMetrics(box);
  }

  // Deferred scripts run in order, and this one comes before studio.js (window.studio): start once
  // the document is parsed and every deferred script has run.
  let started = false;
  function once() { if (!started) { started = true; start(); } }
  if (document.readyState === "complete") once();
  else {
    document.addEventListener("DOMContentLoaded", once);
    window.addEventListener("load", once);
  }
})();
