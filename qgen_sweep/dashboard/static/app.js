// qgen-sweep dashboard: polls /api/version every POLL_MS; when it changes, reloads /api/state
// (and the selected trials' curves) and redraws. Charts: Apache ECharts (vendored, SVG renderer).
"use strict";

const POLL_MS = 2000;
const MAX_CURVES = 12;
// The figures' colours (qgen_sweep/analysis/style.py: Okabe-Ito, one per precision).
const COLORS = { FP32: "#000000", Int8: "#0072B2", Int4: "#E69F00", Int2: "#D55E00" };
const ORDER = ["FP32", "Int8", "Int4", "Int2"];
const STATES = [["done", "#2a9d4b"], ["collapsed", "#9c755f"], ["diverged", "#b07aa1"], ["failed", "#d62728"],
                ["running", "#4e9ad6"], ["interrupted", "#f0c75e"], ["pending", "#cccccc"]];
const MEASURES = ["pacbayes_init", "pacbayes_orig", "pacbayes_mag_init", "pacbayes_mag_orig",
                  "sharpness_init", "sharpness_orig", "sharpness_mag_init", "sharpness_mag_orig"];

// What the page has drawn: read by the browser test (and handy in the console).
window.qgenDashboard = { version: null, updates: 0, rendered: {}, selected: [] };

const charts = {};
let state = null;

function $(id) { return document.getElementById(id); }

function chart(id) {
  if (!charts[id]) charts[id] = echarts.init($(id), null, { renderer: "svg" });
  return charts[id];
}

function color(precision) { return COLORS[precision] || "#888888"; }

function byPrecision(a, b) { return ORDER.indexOf(a) - ORDER.indexOf(b); }

function num(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function pm(mean, sd, digits) {
  if (mean === null || mean === undefined) return "–";
  return sd === null || sd === undefined ? num(mean, digits) : `${num(mean, digits)} ± ${num(sd, digits)}`;
}

function pValue(p) {
  if (p === null || p === undefined) return "n/a";
  return p < 1e-3 ? p.toExponential(2) : p.toFixed(4);
}

function showError(text) {
  const box = $("error");
  box.hidden = !text;
  box.textContent = text || "";
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || `${url}: HTTP ${response.status}`);
  return data;
}

function fillTable(table, header, rows, empty) {
  table.replaceChildren();
  if (!rows.length) {
    const cell = table.insertRow().insertCell();
    cell.textContent = empty;
    cell.className = "empty";
    return;
  }
  const head = table.createTHead().insertRow();
  for (const name of header) {
    const th = document.createElement("th");
    th.textContent = name;
    head.appendChild(th);
  }
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const value of row) {
      const td = tr.insertCell();
      if (value && typeof value === "object") {
        td.textContent = value.text;
        td.className = value.className || "";
      } else {
        td.textContent = value;
      }
    }
  }
}

function sweepPrefix(row) { return state.sweeps.length > 1 ? `${row.sweep} · ` : ""; }

// -- sections ----------------------------------------------------------------------------------

function renderProgress() {
  const rows = state.progress;
  const labels = rows.map((r) => `${sweepPrefix(r)}${r.precision} (n = ${r.planned})`);
  const series = STATES.map(([name, fill]) => ({
    name, type: "bar", stack: "all", color: fill, barMaxWidth: 22,
    label: { show: true, formatter: (p) => (p.value ? p.value : "") },
    data: rows.map((r) => r[name] || 0),
  }));
  chart("progress-chart").setOption({
    animation: false, tooltip: { trigger: "axis" }, legend: { top: 0 },
    grid: { left: 120, right: 20, top: 30, bottom: 20 },
    xAxis: { type: "value", name: "trials", minInterval: 1 },
    yAxis: { type: "category", data: labels, inverse: true },
    series,
  }, true);
  window.qgenDashboard.rendered.progress = rows.length;
  const launches = [...new Set(state.running.map((r) => r.launch).filter(Boolean))];
  $("launch").textContent = launches.length
    ? `running now: ${launches.join(", ")} (${state.running.length} trials training)` : "no launch running";
  fillTable($("running-table"), ["precision", "optimizer", "lr", "epoch", "train loss (nats)", "test acc (%)", "trial"],
    state.running.map((r) => [r.precision || "", r.optimizer || "", r.lr ?? "", r.epochs ? `${r.epoch}/${r.epochs}` : "",
      num(r.train_loss, 3), r.test_acc === null ? "–" : num(100 * r.test_acc, 1), r.trial_id]),
    "no trial is training right now");
}

function renderTable1() {
  fillTable($("table1"),
    ["precision", "n", "collapsed", "diverged", "failed", "train acc %", "test acc %", "train loss", "test loss", "gap", "gap median"],
    state.table1.map((r) => [`${sweepPrefix(r)}${r.precision}`, r.n, r.collapsed, r.diverged, r.failed,
      pm(r.train_acc_mean, r.train_acc_std, 2), pm(r.test_acc_mean, r.test_acc_std, 2),
      pm(r.train_loss_mean, r.train_loss_std, 3), pm(r.test_loss_mean, r.test_loss_std, 3),
      pm(r.gap_mean, r.gap_std, 3), num(r.gap_median, 3)]),
    "no finished trials yet");
  window.qgenDashboard.rendered.table1 = state.table1.length;
}

function renderPaired() {
  fillTable($("paired"), ["precision", "metric", "pairs", "mean diff", "95% CI", "median diff", "Wilcoxon p"],
    state.paired.map((r) => [`${sweepPrefix(r)}${r.precision}`, r.metric === "test_acc" ? "test_acc (pp)" : `${r.metric} (nats)`,
      r.n_pairs, num(r.mean_diff, 4), `[${num(r.ci_low, 4)}, ${num(r.ci_high, 4)}]`, num(r.median_diff, 4), pValue(r.p_value)]),
    "no Int-b model with a done FP32 twin yet");
  window.qgenDashboard.rendered.paired = state.paired.length;
}

function renderGap() {
  const groups = [...state.gap].sort((a, b) => a.sweep.localeCompare(b.sweep) || byPrecision(a.precision, b.precision));
  const labels = groups.map((g) => `${sweepPrefix(g)}${g.precision}\nn = ${g.n}`);
  const points = groups.flatMap((g, i) => g.gaps.map((gap) => ({ value: [i, gap], itemStyle: { color: color(g.precision) } })));
  chart("gap-chart").setOption({
    animation: false, tooltip: { trigger: "item" },
    grid: { left: 60, right: 20, top: 20, bottom: 45 },
    xAxis: { type: "category", data: labels, axisLine: { onZero: false }, axisLabel: { interval: 0, lineHeight: 15 } },
    yAxis: { type: "value", name: "gap, test − train loss (nats)", nameLocation: "middle", nameGap: 45, scale: true },
    series: [
      { name: "quartiles", type: "boxplot", data: groups.map((g) => g.box), itemStyle: { color: "#fff", borderColor: "#333" } },
      { name: "trials", type: "scatter", data: points, symbolSize: 6, itemStyle: { opacity: 0.6 } },
    ],
  }, true);
  window.qgenDashboard.rendered.gap = points.length;
}

function trialLabel(t) {
  return `${sweepPrefix(t)}${t.precision.padEnd(4)} ${t.optimizer} lr=${t.lr} wd=${t.weight_decay} d${t.depth} w${t.width} ${t.state}  ${t.trial_id}`;
}

function renderSelector() {
  const select = $("trial-select");
  const withEpochs = state.trials.filter((t) => t.state !== "pending" || state.running.some((r) => r.trial_id === t.trial_id));
  const known = new Set(withEpochs.map((t) => t.trial_id));
  let selected = window.qgenDashboard.selected.filter((id) => known.has(id));
  if (!selected.length) { // one finished trial per precision to start with
    const seen = new Set();
    for (const t of withEpochs) {
      if (t.state === "done" && !seen.has(t.precision)) { seen.add(t.precision); selected.push(t.trial_id); }
    }
  }
  select.replaceChildren(...withEpochs.map((t) => {
    const option = new Option(trialLabel(t), t.trial_id, false, selected.includes(t.trial_id));
    return option;
  }));
  window.qgenDashboard.selected = selected.slice(0, MAX_CURVES);
}

async function loadCurves() {
  const ids = window.qgenDashboard.selected;
  const curves = ids.length ? (await getJSON(`/api/curves?ids=${ids.join(",")}`)).curves : [];
  const series = curves.flatMap((c) => {
    const name = `${c.precision} ${c.trial_id.slice(0, 6)}`;
    const line = (key, dash) => ({
      name, type: "line", showSymbol: c.epoch.length < 40, color: color(c.precision),
      lineStyle: { type: dash }, data: c.epoch.map((e, i) => [e, c[key][i]]),
    });
    return [line("train_loss", "solid"), line("test_loss", "dashed")];
  });
  chart("curves-chart").setOption({
    animation: false, tooltip: { trigger: "axis" }, legend: { top: 0, type: "scroll" },
    grid: { left: 60, right: 20, top: 40, bottom: 40 },
    xAxis: { type: "value", name: "epoch", nameLocation: "middle", nameGap: 25, minInterval: 1 },
    yAxis: { type: "value", name: "cross-entropy loss (nats)", nameLocation: "middle", nameGap: 45, scale: true },
    series,
  }, true);
  window.qgenDashboard.rendered.curves = series.length;
}

function renderMeasures() {
  const rows = state.measures.filter((r) => MEASURES.includes(r.measure));
  const precisions = ORDER.filter((p) => rows.some((r) => r[p] !== null));
  chart("measures-chart").setOption({
    animation: false, tooltip: { trigger: "axis" }, legend: { top: 0 },
    grid: { left: 60, right: 20, top: 30, bottom: 70 },
    xAxis: { type: "category", data: rows.map((r) => `${sweepPrefix(r)}${r.measure}`), axisLabel: { rotate: 30 } },
    yAxis: { type: "value", name: "√(bound / m)", nameLocation: "middle", nameGap: 45 },
    series: precisions.map((p) => ({ name: p, type: "bar", color: color(p), data: rows.map((r) => r[p]) })),
    graphic: rows.length ? [] : [{ type: "text", left: "center", top: "middle", style: { text: "no measures yet: run `qgen-sweep measure`", fill: "#666" } }],
  }, true);
  fillTable($("measures"), ["measure", ...ORDER, "models"],
    rows.map((r) => [`${sweepPrefix(r)}${r.measure}`, ...ORDER.map((p) => num(r[p], 4)), r.models]),
    "no measures yet: run `qgen-sweep measure SWEEP`");
  window.qgenDashboard.rendered.measures = rows.length;
}

function renderParallel() {
  const finished = state.trials.filter((t) => t.gap !== null);
  // Category axes take strings (a number would be read as an index into the categories).
  const levels = (key) => [...new Set(finished.map((t) => t[key]))].sort((a, b) => a - b).map(String);
  const categorical = { arch: [...new Set(finished.map((t) => t.arch))].sort(),
                        optimizer: [...new Set(finished.map((t) => t.optimizer))].sort(),
                        bits: [...new Set(finished.map((t) => t.precision))].sort(byPrecision),
                        depth: levels("depth"), width: levels("width") };
  const dims = [...state.axes, "gap", "test_acc"];
  const names = { lr: "lr", weight_decay: "weight decay", bits: "precision", gap: "gap (nats)", test_acc: "test acc (%)" };
  const parallelAxis = dims.map((d, i) => (d in categorical
    ? { dim: i, name: names[d] || d, type: "category", data: categorical[d] }
    : { dim: i, name: names[d] || d, type: d === "lr" ? "log" : "value", scale: true }));
  const value = (t, d) => (d === "bits" ? t.precision : d in categorical ? String(t[d]) : t[d]);
  const precisions = [...new Set(finished.map((t) => t.precision))].sort(byPrecision);
  chart("parallel-chart").setOption({
    animation: false, legend: { top: 0 },
    parallel: { left: 60, right: 80, top: 50, bottom: 30 },
    parallelAxis,
    series: precisions.map((p) => ({
      name: p, type: "parallel", color: color(p), lineStyle: { width: 1, opacity: 0.5 },
      data: finished.filter((t) => t.precision === p).map((t) => dims.map((d) => value(t, d))),
    })),
  }, true);
  window.qgenDashboard.rendered.parallel = finished.length;
}

// -- refresh loop --------------------------------------------------------------------------------

async function loadState() {
  state = await getJSON("/api/state");
  $("sweeps").textContent = state.sweeps.join(", ");
  $("results-dir").textContent = state.results_dir;
  renderProgress();
  renderTable1();
  renderPaired();
  renderGap();
  renderSelector();
  renderMeasures();
  renderParallel();
  await loadCurves();
  window.qgenDashboard.version = state.version;
  window.qgenDashboard.updates += 1;
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function poll() {
  try {
    const { version } = await getJSON("/api/version");
    if (version !== window.qgenDashboard.version) await loadState();
    $("live").className = "dot on";
    showError("");
  } catch (error) {
    $("live").className = "dot";
    showError(`cannot update: ${error.message}`);
  }
  setTimeout(poll, POLL_MS);
}

$("trial-select").addEventListener("change", async (event) => {
  window.qgenDashboard.selected = [...event.target.selectedOptions].map((o) => o.value).slice(0, MAX_CURVES);
  try { await loadCurves(); showError(""); } catch (error) { showError(`cannot load curves: ${error.message}`); }
});
window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
poll();
