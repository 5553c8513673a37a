// Charts of the migration report page: plain SVG, no library. Data: #report-data.
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = { succeeded: "#1b7f3b", failed: "#c62828", cancelled: "#9aa3b2", bar: "#1f6feb" };

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function frame(container, width, height) {
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
    container.replaceChildren(svg);
    return svg;
  }

  // The outcomes' words in the page's language (the keys are the API's).
  const OUTCOMES = { succeeded: gettext("succeeded"), failed: gettext("failed"), cancelled: gettext("cancelled") };

  // The outcomes' words in the page's language (the keys are the API's).
  const OUTCOMES = { succeeded: gettext("succeeded"), failed: gettext("failed"), cancelled: gettext("cancelled") };

  function legend(container, keys) {
    const box = document.createElement("div");
    box.className = "legend";
    for (const key of keys) {
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLORS[key];
      item.append(swatch, OUTCOMES[key] || key);
      box.append(item);
    }
    container.append(box);
  }

  // Stacked bars: one per day, succeeded / failed / cancelled.
  function perDay(container, days) {
    if (!days.length) { container.textContent = gettext("No migrations in this range."); return; }
    const W = 1000, H = 220, left = 40, bottom = 20, top = 8;
    const svg = frame(container, W, H);
    const max = Math.max(1, ...days.map((d) => d.total));
    const plotH = H - bottom - top, slot = (W - left) / days.length;
    const y = (v) => (v / max) * plotH;
    svg.append(el("text", { x: 2, y: top + 10, class: "axis", "font-size": 11 }, String(max)));
    svg.append(el("text", { x: 2, y: H - bottom, "font-size": 11 }, "0"));
    days.forEach((d, i) => {
      let base = H - bottom;
      for (const key of ["succeeded", "failed", "cancelled"]) {
        const h = y(d[key]);
        if (h <= 0) continue;
        base -= h;
        const rect = el("rect", {
          x: left + i * slot, y: base, width: Math.max(1, slot * 0.85), height: h, fill: COLORS[key],
        });
        rect.append(el("title", {}, interpolate(gettext("%(day)s: %(count)s %(outcome)s of %(total)s"), { day: d.day, count: d[key], outcome: OUTCOMES[key], total: d.total }, true)));
        svg.append(rect);
      }
    });
    const step = Math.max(1, Math.ceil(days.length / 8));
    days.forEach((d, i) => {
      if (i % step === 0) {
        svg.append(el("text", { x: left + i * slot, y: H - 4, "font-size": 11 }, d.day));
      }
    });
    legend(container, ["succeeded", "failed", "cancelled"]);
  }

  function label(ms) {
    if (ms === null) return "";
    return ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`;
  }

  // Histogram of bucket counts.
  function histogram(container, buckets) {
    const total = buckets.reduce((s, b) => s + b.count, 0);
    if (!total) { container.textContent = gettext("No data."); return; }
    const W = 500, H = 220, bottom = 34, top = 14;
    const svg = frame(container, W, H);
    const max = Math.max(...buckets.map((b) => b.count));
    const slot = W / buckets.length, plotH = H - bottom - top;
    buckets.forEach((b, i) => {
      const h = (b.count / max) * plotH;
      const name = b.upper_ms === null ? `≥ ${label(b.lower_ms)}` : `${label(b.lower_ms)}–${label(b.upper_ms)}`;
      const rect = el("rect", {
        x: i * slot + 2, y: H - bottom - h, width: slot - 4, height: h, fill: COLORS.bar,
      });
      rect.append(el("title", {}, `${name}: ${b.count}`));
      svg.append(rect);
      svg.append(el("text", { x: i * slot + 2, y: H - bottom - h - 3, "font-size": 10 }, String(b.count)));
      svg.append(el("text", { x: i * slot + 2, y: H - 20, "font-size": 10 }, label(b.lower_ms)));
    });
    svg.append(el("text", { x: 2, y: H - 4, "font-size": 10 }, gettext(gettext("lower bound of each bucket"))));
  }

  document.addEventListener("DOMContentLoaded", function () {
    const source = document.getElementById("report-data");
    if (!source) return;
    const data = JSON.parse(source.textContent);
    perDay(document.getElementById("chart-per-day"), data.per_day);
    histogram(document.getElementById("chart-duration"), data.duration);
    histogram(document.getElementById("chart-downtime"), data.downtime);
  });
})();
