// pageq dashboard: live values (server-sent events), charts, confirmations. No framework, no inline script.
"use strict";

(() => {
  const body = document.body;
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(`--${name}`).trim() || "#888";
  const DEPTH = ["queued", "running", "scheduled", "retrying", "blocked", "dead"];
  const LIVE_POINTS = 300;

  const fmtNumber = (v) => (Math.abs(v) >= 100 ? Math.round(v).toString() : (Math.round(v * 100) / 100).toString());
  const fmtSeconds = (v) => (v < 1 ? `${Math.round(v * 1000)} ms` : v < 60 ? `${Math.round(v * 10) / 10} s` : `${Math.round(v / 6) / 10} min`);
  const last = (values) => { for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i]; return null; };
  const sum = (values) => values.reduce((a, v) => a + (v || 0), 0);

  // ----- times in the viewer's zone (the page shows UTC)
  for (const node of document.querySelectorAll("time[datetime]")) {
    const d = new Date(node.getAttribute("datetime"));
    if (!Number.isNaN(d.getTime())) node.title = d.toLocaleString();
  }

  // ----- confirmations and selections
  document.addEventListener("submit", (event) => {
    const source = event.submitter && event.submitter.dataset.confirm ? event.submitter : event.target;
    const question = source.dataset ? source.dataset.confirm : null;
    if (question && !window.confirm(question)) event.preventDefault();
  });
  for (const all of document.querySelectorAll("[data-select-all]")) {
    all.addEventListener("change", () => {
      for (const box of all.closest("table").querySelectorAll("tbody input[type=checkbox]")) box.checked = all.checked;
    });
  }
  const markZero = () => {
    for (const node of document.querySelectorAll(".top nav .count")) node.toggleAttribute("data-zero", node.textContent.trim() === "0");
  };
  markZero();

  // ----- history charts (the rolled-up minutes)
  const controls = document.querySelector("[data-chart-controls]");
  const charts = [...document.querySelectorAll("figure[data-chart]")];

  function draw(figure, data) {
    const plot = figure.querySelector(".plot");
    const legendBox = figure.querySelector(".legend");
    const kind = figure.dataset.chart;
    let series, items, format = fmtNumber;
    if (kind === "throughput") {
      series = [["enqueued", "queued"], ["succeeded", "succeeded"], ["failed", "retrying"], ["dead", "dead"]]
        .map(([name, c]) => ({ name, color: color(c), values: data[name] }));
      items = series.map((s) => ({ name: s.name, color: s.color, value: String(sum(s.values)) }));
    } else if (kind === "latency") {
      format = fmtSeconds;
      const shades = { wait: ["#9dbcf2", "#4f86e6", "#1d4ea8"], run: ["#f5c87a", "#e09a1f", "#9c6200"] };
      series = [];
      for (const phase of ["wait", "run"]) {
        ["p50", "p95", "p99"].forEach((p, i) => series.push({ name: `${phase} ${p}`, color: shades[phase][i], values: data[`${phase}_${p}`] }));
      }
      items = series.map((s) => ({ name: s.name, color: s.color, value: last(s.values) === null ? "-" : fmtSeconds(last(s.values)) }));
    } else {
      series = DEPTH.map((s) => ({ name: s, color: color(s), values: data.depth[s] }));
      items = series.map((s) => ({ name: s.name, color: s.color, value: last(s.values) === null ? "-" : String(last(s.values)) }));
    }
    PageqCharts.line(plot, { xs: data.t, series, format, window: data.minutes * 60, empty: "no rolled-up minute yet" });
    PageqCharts.legend(legendBox, items);
    figure.dataset.minutes = String(data.t.length);
  }

  async function loadHistory() {
    if (!charts.length) return;
    const params = new URLSearchParams(controls ? new FormData(controls) : undefined);
    for (const [k, v] of [...params.entries()]) if (!v) params.delete(k);
    const response = await fetch(`${charts[0].dataset.url}?${params}`, { credentials: "same-origin" });
    if (response.status === 401 || response.redirected) { window.location.reload(); return; }
    if (!response.ok) {
      for (const figure of charts) figure.querySelector(".plot").textContent = "not available: " + response.status;
      return;
    }
    const data = await response.json();
    for (const figure of charts) draw(figure, data);
  }
  if (controls) controls.addEventListener("change", loadHistory);
  if (charts.length) { loadHistory(); setInterval(loadHistory, 60000); }

  // ----- live values and live charts (server-sent events)
  const dot = document.getElementById("live-dot");
  const samples = [];
  const liveCharts = [...document.querySelectorAll("figure[data-live-chart]")];

  function drawLive() {
    const xs = samples.map((s) => s.at);
    for (const figure of liveCharts) {
      const plot = figure.querySelector(".plot");
      const legendBox = figure.querySelector(".legend");
      if (figure.dataset.liveChart === "depth") {
        const series = DEPTH.filter((s) => s !== "dead").map((s) => ({ name: s, color: color(s), values: samples.map((p) => p.depth[s]) }));
        PageqCharts.line(plot, { xs, series, format: fmtNumber, window: LIVE_POINTS });
        PageqCharts.legend(legendBox, series.map((s) => ({ name: s.name, color: s.color, value: String(last(s.values) ?? "-") })));
      } else {
        const rate = samples.map((p, i) => {
          if (i === 0) return null;
          const dt = p.at - samples[i - 1].at;
          const done = p.processed - samples[i - 1].processed;
          return dt > 0 && done >= 0 ? done / dt : null;
        });
        const failed = samples.map((p, i) => {
          if (i === 0) return null;
          const dt = p.at - samples[i - 1].at;
          const n = p.failed - samples[i - 1].failed;
          return dt > 0 && n >= 0 ? n / dt : null;
        });
        const series = [
          { name: "attempts/s", color: color("succeeded"), values: rate },
          { name: "failed/s", color: color("dead"), values: failed },
        ];
        PageqCharts.line(plot, { xs, series, format: fmtNumber, window: LIVE_POINTS, empty: "waiting for the next second" });
        const now = samples[samples.length - 1];
        PageqCharts.legend(legendBox, [
          ...series.map((s) => ({ name: s.name, color: s.color, value: last(s.values) === null ? "-" : fmtNumber(last(s.values)) })),
          { name: "running", color: color("running"), value: now ? `${now.running} / ${now.capacity}` : "-" },
        ]);
      }
    }
  }

  function apply(event) {
    const values = event.values;
    for (const node of document.querySelectorAll("[data-live]")) {
      const value = values[node.dataset.live];
      if (value !== undefined && node.textContent !== value) {
        node.textContent = value;
        node.classList.remove("changed");
        void node.offsetWidth;
        node.classList.add("changed");
      }
    }
    markZero();
    samples.push(event);
    if (samples.length > LIVE_POINTS) samples.shift();
    if (liveCharts.length) drawLive();
    body.dataset.liveAt = String(event.at);
  }

  if (body.dataset.events && window.EventSource) {
    const source = new EventSource(body.dataset.events);
    source.addEventListener("open", () => { dot.className = "live-dot on"; dot.title = "live updates: on"; });
    source.addEventListener("error", () => { dot.className = "live-dot off"; dot.title = "live updates: reconnecting"; });
    source.addEventListener("snapshot", (message) => apply(JSON.parse(message.data)));
    source.addEventListener("logout", () => { source.close(); window.location.href = `${body.dataset.base}/login`; });
  }

  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (liveCharts.length && samples.length) drawLive(); loadHistory(); }, 200);
  });
})();
