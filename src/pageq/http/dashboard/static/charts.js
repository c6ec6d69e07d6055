// pageq dashboard: small SVG line charts (no library). PageqCharts.line(plot, {xs, series, format}).
"use strict";

const PageqCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PAD = { left: 46, right: 10, top: 8, bottom: 22 };

  function svg(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function clock(seconds, span) {
    const d = new Date(seconds * 1000);
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return span < 180 ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : hm;
  }

  // A path through the points, broken where a value is null.
  function pathOf(xs, values, x, y) {
    let d = "";
    let open = false;
    values.forEach((v, i) => {
      if (v === null || v === undefined || Number.isNaN(v)) { open = false; return; }
      d += (open ? "L" : "M") + x(xs[i]).toFixed(1) + "," + y(v).toFixed(1);
      open = true;
    });
    return d;
  }

  function line(plot, opts) {
    const xs = opts.xs || [];
    const series = opts.series || [];
    const format = opts.format || ((v) => String(Math.round(v * 100) / 100));
    plot.textContent = "";
    const width = plot.clientWidth || 480;
    const height = plot.clientHeight || 190;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" }, plot);
    const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined && !Number.isNaN(v));
    const top = niceMax(Math.max(0, ...all));
    // a fixed window (seconds) ending at the newest point, so that a short series grows from the right
    const x1 = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
    const x0 = opts.window ? x1 - opts.window : xs.length > 1 ? xs[0] : x1 - 1;
    const x = (t) => PAD.left + ((t - x0) / (x1 - x0 || 1)) * (width - PAD.left - PAD.right);
    const y = (v) => height - PAD.bottom - (v / top) * (height - PAD.top - PAD.bottom);

    const grid = svg("g", { class: "grid" }, root);
    const axis = svg("g", { class: "axis" }, root);
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      svg("line", { x1: PAD.left, x2: width - PAD.right, y1: y(v), y2: y(v) }, grid);
      const label = svg("text", { x: PAD.left - 6, y: y(v) + 3.5, "text-anchor": "end" }, axis);
      label.textContent = format(v);
    }
    const ticks = Math.max(2, Math.min(6, Math.floor((width - PAD.left) / 90)));
    for (let i = 0; i < ticks && (xs.length > 1 || opts.window); i++) {
      const t = x0 + ((x1 - x0) * i) / (ticks - 1);
      const label = svg("text", { x: x(t), y: height - 5, "text-anchor": i === 0 ? "start" : i === ticks - 1 ? "end" : "middle" }, axis);
      label.textContent = clock(t, x1 - x0);
    }
    if (!all.length) {
      const note = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty-note" }, root);
      note.textContent = opts.empty || "no data yet";
    }
    const group = svg("g", { class: "series" }, root);
    for (const s of series) {
      const d = pathOf(xs, s.values, x, y);
      if (!d) continue;
      svg("path", { d, stroke: s.color, "data-name": s.name }, group);
      // lone points (a value between two gaps) as dots
      s.values.forEach((v, i) => {
        const before = i > 0 ? s.values[i - 1] : null;
        const after = i < s.values.length - 1 ? s.values[i + 1] : null;
        if (v > 0 && (before === null || before === undefined) && (after === null || after === undefined)) {
          svg("circle", { cx: x(xs[i]), cy: y(v), r: 2.5, fill: s.color }, group);
        }
      });
    }
    hover(plot, root, xs, series, x, height, format);
    plot.dataset.ready = "1";
  }

  function hover(plot, root, xs, series, x, height, format) {
    if (xs.length < 1) return;
    const cursor = svg("line", { class: "cursor", y1: PAD.top, y2: height - PAD.bottom, visibility: "hidden" }, root);
    const tip = document.createElement("div");
    tip.className = "tooltip";
    tip.hidden = true;
    plot.appendChild(tip);
    root.addEventListener("mousemove", (event) => {
      const box = root.getBoundingClientRect();
      const px = ((event.clientX - box.left) / box.width) * root.viewBox.baseVal.width;
      let best = 0;
      xs.forEach((t, i) => { if (Math.abs(x(t) - px) < Math.abs(x(xs[best]) - px)) best = i; });
      cursor.setAttribute("x1", x(xs[best]));
      cursor.setAttribute("x2", x(xs[best]));
      cursor.setAttribute("visibility", "visible");
      tip.textContent = "";
      const head = document.createElement("div");
      head.className = "t";
      head.textContent = new Date(xs[best] * 1000).toLocaleString();
      tip.appendChild(head);
      for (const s of series) {
        const v = s.values[best];
        const row = document.createElement("div");
        row.textContent = `${s.name}: ${v === null || v === undefined ? "-" : format(v)}`;
        tip.appendChild(row);
      }
      tip.hidden = false;
      const left = event.clientX - plot.getBoundingClientRect().left;
      tip.style.left = `${Math.min(left + 12, plot.clientWidth - tip.offsetWidth)}px`;
      tip.style.top = "4px";
    });
    root.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); tip.hidden = true; });
  }

  // The legend under a chart: a swatch, the name and a summary value of each series.
  function legend(box, items) {
    box.textContent = "";
    for (const item of items) {
      const span = document.createElement("span");
      span.className = "item";
      span.dataset.series = item.name;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = item.color;
      const value = document.createElement("b");
      value.textContent = item.value;
      span.append(swatch, document.createTextNode(item.name + " "), value);
      box.appendChild(span);
    }
  }

  return { line, legend, niceMax };
})();
