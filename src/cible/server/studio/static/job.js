// cible studio, a job's page: the live log (pre#job-log, polled from an offset) and the metric charts
// (div#metric-charts, one uPlot line chart per metric, x = step). Both stop once the job has ended and
// there is nothing more to read, or when their route refuses (a 4xx: the job was deleted), saying why in
// #log-note / #metrics-note; no answer or a 5xx is retried every 5 s, and the note says so. Data comes from
// the page's data-* attributes (no inline script).
(function () {
  "use strict";
  const LOG_EVERY_MS = 1000;
  const METRICS_EVERY_MS = 2000;
  const RETRY_MS = 5000;
  const CHUNK = 1 << 20; // the server's read size: a full chunk means more is waiting
  const KEEP_CHARS = 2000000; // the log kept on the page (the rest: "Download the log")

  // A GET of one of the job's data routes, made as window.studio.getJSON makes it (a lost session sends
  // the browser to the sign-in page) but answered whatever its status, so that a refusal's own text can
  // say why the page stopped following. A fetch that throws is a network error: the server did not answer.
  function SignedOut() {}
  async function load(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: {
      "Accept": "application/json", "HX-Request": "true",
      "X-Studio-Page": window.location.pathname + window.location.search } });
    const to = response.headers.get("HX-Redirect");
    if (to) { window.location.assign(to); throw new SignedOut(); }
    return response;
  }

  // A 4xx is an answer that asking again will not change (404: the job was deleted): stop. 408 and 429
  // say "later", and a 5xx or no answer may pass: those are retried.
  function final(status) { return status >= 400 && status < 500 && status !== 408 && status !== 429; }

  // What a refusal says: the route's text, or the "error" (or error.message) of its JSON, kept short.
  async function reason(response) {
    let text = "";
    try { text = (await response.text()).trim(); } catch (error) { text = ""; }
    if ((response.headers.get("Content-Type") || "").indexOf("json") >= 0) {
      try {
        const body = JSON.parse(text);
        const error = body && body.error;
        text = typeof error === "string" ? error : (error && error.message) || (body && body.message) || text;
      } catch (error) { /* not JSON after all: its text */ }
    }
    text = String(text || "").replace(/\s+/g, " ");
    return text.length > 300 ? text.slice(0, 300) + "…" : text;
  }

  function failure(error) { return String(error && error.message || error); }

  // One read of a data route for `el` (the log or the charts): its answer when it is a 2xx; otherwise
  // null, once the failure is dealt with: a 4xx stops following `what`, saying why; the rest is retried.
  async function answered(el, url, what, say, retry) {
    let response;
    try {
      response = await load(url);
    } catch (error) {
      if (!(error instanceof SignedOut)) retry("the server did not answer (" + failure(error) + ")");
      return null;
    }
    if (response.ok) return response;
    if (!final(response.status)) { retry("the server answered " + response.status); return null; }
    const why = await reason(response);
    el.dataset.error = why || "answered " + response.status;
    el.dataset.stopped = "true";
    say("Stopped following " + what + ": " + (why ? why + " " : "") + "(the server answered " + response.status + ").");
    return null;
  }

  // What to do when a read failed in a way that may pass: say so on `el` and read again in RETRY_MS.
  function retrier(el, what, say, again) {
    return function (why) {
      el.dataset.error = why;
      say("Could not read " + what + ": " + why + "; retrying every " + RETRY_MS / 1000 + " s.");
      setTimeout(again, RETRY_MS);
    };
  }

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

    const retry = retrier(pre, "the log", say, () => tick());

    async function tick() {
      let got = 0;
      const response = await answered(pre, url + "?offset=" + offset, "the log", say, retry);
      if (!response) return;
      try {
        const bytes = new Uint8Array(await response.arrayBuffer());
        got = bytes.byteLength;
        const next = Number(response.headers.get("X-Cible-Next-Offset"));
        offset = Number.isFinite(next) ? next : offset + got;
        status = response.headers.get("X-Cible-Job-Status") || status;
        append(decoder.decode(bytes, { stream: true }));
        delete pre.dataset.error;
      } catch (error) { // the answer broke off while it was read
        retry("the server's answer broke off (" + failure(error) + ")");
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

    const retry = retrier(box, "the metrics", say, () => tick());

    async function tick() {
      let body;
      const response = await answered(box, url, "the metrics", say, retry);
      if (!response) return;
      try {
        body = await response.json();
        delete box.dataset.error;
      } catch (error) { // cut short, or not JSON
        retry("the server's answer could not be read (" + failure(error) + ")");
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
