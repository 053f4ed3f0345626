// The coordinator's read-only status page: fetches /api/v1/overview and renders it. Every value is untrusted
// (member names come from the policy, metric names, refusals and reasons from round reports): text is set with
// textContent and attributes with setAttribute, never parsed as markup; the page's CSP forbids inline script and
// enforces Trusted Types, so an innerHTML with a string would throw rather than render.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22"];
  const MAX_LINES = 32; // a round report carries at most 32 metrics; a run's chart draws at most as many lines
  const WIDTH = 640, HEIGHT = 260, LEFT = 64, RIGHT = 16, TOP = 14, BOTTOM = 36;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function short(hex) { return hex ? String(hex).slice(0, 16) : "-"; }

  function fmt(n) {
    if (typeof n !== "number" || !Number.isFinite(n)) return "-";
    const a = Math.abs(n);
    return a !== 0 && (a >= 1e5 || a < 1e-3) ? n.toExponential(3) : String(Number(n.toPrecision(4)));
  }

  function row(body, cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = el("td", c.text === undefined ? c : c.text, c.cls);
      if (c.title) td.title = String(c.title);
      tr.appendChild(td);
    }
    body.appendChild(tr);
    return tr;
  }

  function header(o) {
    document.getElementById("federation").textContent = String(o.federation);
    document.title = "fedattest status: " + String(o.federation);
    document.getElementById("simulated-badge").hidden = o.simulated !== true;
    const policy = document.getElementById("policy");
    policy.textContent = "policy version " + (o.policy_version ?? "?") + " · hash " + short(o.policy_hash) + "… · TEE "
      + String(o.tee) + " · " + o.audit_entries + " audit entries · " + o.reprovisions + " re-provisionings · as of "
      + new Date().toISOString().replace(/\.\d+Z$/, "Z");
    policy.title = "policy hash " + String(o.policy_hash);
  }

  function members(o) {
    const body = document.querySelector("#members tbody");
    body.replaceChildren();
    for (const m of o.members) {
      const activations = m.activations + "/" + m.max_activations + (m.revoked ? " (" + m.revoked + " revoked)" : "");
      const tr = row(body, [m.name, m.role, m.attestation ?? "-", { text: short(m.mrenclave), cls: "hex", title: m.mrenclave },
        m.tcb_status ?? "-", { text: short(m.data_commitment), cls: "hex", title: m.data_commitment }, activations,
        m.last_activation ?? "-", { text: short(m.node_key_sha256), cls: "hex", title: m.node_key_sha256 },
        { text: m.node_id ?? "-", cls: "hex" }]);
      tr.setAttribute("data-member", String(m.name));
    }
  }

  function runs(o) {
    const body = document.querySelector("#runs tbody");
    const refusals = document.querySelector("#refusals tbody");
    body.replaceChildren();
    refusals.replaceChildren();
    const latest = o.runs.slice().reverse(); // the run reported last first
    document.getElementById("runs-note").textContent = o.runs_total > o.runs.length
      ? "the latest " + o.runs.length + " of " + o.runs_total + " runs" : (o.runs.length ? "" : "no runs recorded yet");
    for (const run of latest) {
      const last = run.rounds.length ? run.rounds[run.rounds.length - 1] : { metrics: {} };
      const shown = Object.keys(last.metrics).sort().map((k) => k + " " + fmt(last.metrics[k])).join(", ");
      const dp = run.dp ? fmt(run.dp.noise_multiplier) + ", " + fmt(run.dp.clipping_norm) : "not reported";
      row(body, [{ text: run.run_id, cls: "hex" }, run.rounds.length, run.participants.join(", "), run.refused, dp, shown || "-"])
        .setAttribute("data-run", String(run.run_id));
      for (const r of run.refusals) row(refusals, [{ text: run.run_id, cls: "hex" }, r.round, r.member, { text: r.reason, cls: "reason" }]);
    }
  }

  function chart(run) {
    const names = run.metric_names.slice(0, MAX_LINES);
    const rounds = run.rounds.map((r) => r.round);
    const values = run.rounds.flatMap((r) => names.filter((n) => n in r.metrics).map((n) => r.metrics[n]));
    const box = el("div", null, "chart");
    box.setAttribute("data-run", String(run.run_id));
    box.appendChild(el("h3", "run " + run.run_id));
    const [x0, x1] = [Math.min(...rounds), Math.max(...rounds)];
    let [y0, y1] = [Math.min(...values), Math.max(...values)];
    if (y0 === y1) { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
    const x = (v) => LEFT + (x1 === x0 ? (WIDTH - LEFT - RIGHT) / 2 : (v - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT));
    const y = (v) => TOP + (y1 - v) / (y1 - y0) * (HEIGHT - TOP - BOTTOM);
    const plot = svg("svg", { width: WIDTH, height: HEIGHT, viewBox: "0 0 " + WIDTH + " " + HEIGHT, role: "img" });
    plot.appendChild(svg("title", {}, "metrics per round, run " + run.run_id));
    plot.appendChild(svg("line", { class: "axis", x1: LEFT, y1: TOP, x2: LEFT, y2: HEIGHT - BOTTOM }));
    plot.appendChild(svg("line", { class: "axis", x1: LEFT, y1: HEIGHT - BOTTOM, x2: WIDTH - RIGHT, y2: HEIGHT - BOTTOM }));
    for (const v of [y0, (y0 + y1) / 2, y1]) {
      plot.appendChild(svg("text", { class: "label", x: LEFT - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    const step = Math.max(1, Math.ceil(rounds.length / 12));
    rounds.forEach((r, i) => {
      if (i % step === 0 || i === rounds.length - 1) {
        plot.appendChild(svg("text", { class: "label", x: x(r), y: HEIGHT - BOTTOM + 16, "text-anchor": "middle" }, r));
      }
    });
    plot.appendChild(svg("text", { class: "label", x: (WIDTH + LEFT) / 2, y: HEIGHT - 4, "text-anchor": "middle" }, "round"));
    const legend = el("ul", null, "legend");
    names.forEach((name, i) => {
      const color = COLORS[i % COLORS.length];
      const points = run.rounds.filter((r) => name in r.metrics).map((r) => [x(r.round), y(r.metrics[name])]);
      const d = points.map(([px, py], j) => (j ? "L" : "M") + px.toFixed(1) + " " + py.toFixed(1)).join(" ");
      const path = svg("path", { class: "series", d: d, stroke: color, "data-metric": name, "data-points": points.length });
      path.appendChild(svg("title", {}, name));
      plot.appendChild(path);
      for (const [px, py] of points) plot.appendChild(svg("circle", { cx: px, cy: py, r: 2.5, fill: color }));
      const item = el("li");
      const swatch = svg("svg", { width: 18, height: 10 });
      swatch.appendChild(svg("line", { x1: 0, y1: 5, x2: 18, y2: 5, stroke: color, "stroke-width": 3 }));
      item.appendChild(swatch);
      const last = run.rounds.filter((r) => name in r.metrics).pop();
      item.appendChild(el("span", name + (last ? " (round " + last.round + ": " + fmt(last.metrics[name]) + ")" : "")));
      item.setAttribute("data-metric", name);
      legend.appendChild(item);
    });
    box.appendChild(plot);
    box.appendChild(legend);
    if (run.metric_names.length > MAX_LINES) box.appendChild(el("p", "(the first " + MAX_LINES + " metrics are drawn)", "muted"));
    return box;
  }

  function charts(o) {
    const holder = document.getElementById("charts");
    holder.replaceChildren();
    const withMetrics = o.runs.slice().reverse().filter((run) => run.metric_names.length && run.rounds.length);
    if (!withMetrics.length) holder.appendChild(el("p", "no metrics reported yet", "muted"));
    for (const run of withMetrics) holder.appendChild(chart(run));
  }

  function render(o) {
    header(o);
    members(o);
    runs(o);
    charts(o);
    document.body.setAttribute("data-rendered", "true");
  }

  function failed(error) {
    const box = document.getElementById("error");
    box.textContent = "could not load /api/v1/overview: " + String(error && error.message ? error.message : error);
    box.hidden = false;
    document.body.setAttribute("data-rendered", "error");
  }

  fetch("/api/v1/overview", { headers: { accept: "application/json" }, cache: "no-store", credentials: "omit" })
    .then((response) => { if (!response.ok) throw new Error("HTTP " + response.status); return response.json(); })
    .then(render)
    .catch(failed);
})();
