// Small pure helpers: DOM building (text only, never HTML from data), numbers, times, run progress.

/** Create an element; children are nodes or strings (inserted as text, so feed content cannot inject HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") {
      for (const [name, item] of Object.entries(value)) if (item !== undefined && item !== null) el.dataset[name] = item;
    }
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const FINISHED = new Set(["completed", "partial", "failed"]);
const STATUS_RANK = { pending: 0, running: 1, completed: 2, partial: 2, failed: 2 };
const numberFormat = new Intl.NumberFormat();

export function fmtNumber(value) {
  return numberFormat.format(Number(value || 0));
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function fmtDateTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtRelative(iso, now = Date.now()) {
  if (!iso) return "–";
  const seconds = Math.round((now - new Date(iso).getTime()) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  return fmtDateTime(iso);
}

/** Items of a run that already have an outcome. */
export function accounted(run) {
  return ["newJobs", "updatedJobs", "unchangedJobs", "failedJobs"].reduce((sum, key) => sum + Number(run[key] || 0), 0);
}

/** Whether snapshot `next` is at least as far along as `prev`: late or replayed snapshots never roll a row back. */
export function isNewer(next, prev) {
  if (!prev) return true;
  const rank = (STATUS_RANK[next.status] ?? 0) - (STATUS_RANK[prev.status] ?? 0);
  if (rank !== 0) return rank > 0;
  return accounted(next) >= accounted(prev);
}

export function badge(status, label = status) {
  return h("span", { class: "badge", dataset: { status } }, label);
}

/** While running: share of items accounted for; once finished: the mix of outcomes. */
export function progressBar(run) {
  const total = Number(run.totalFetched || 0);
  const done = accounted(run);
  if (!FINISHED.has(run.status)) {
    if (run.status === "pending" || total === 0) {
      return h("div", { class: "progress", dataset: { progress: "waiting" } },
        h("div", { class: "bar indeterminate", role: "progressbar", "aria-label": "waiting" }, h("span")),
        h("div", { class: "bar-label" }, run.status === "pending" ? "queued" : "fetching…"));
    }
    const pct = Math.min(100, Math.round((done / total) * 100));
    const fill = h("span", { class: "fill" });
    fill.style.width = `${pct}%`;
    return h("div", { class: "progress", dataset: { progress: String(pct) } },
      h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total, "aria-valuenow": done }, fill),
      h("div", { class: "bar-label" }, `${fmtNumber(done)} / ${fmtNumber(total)} · ${pct}%`));
  }
  const bar = h("div", { class: "bar", title: "new · updated · unchanged · failed" });
  const segments = [["new", run.newJobs], ["updated", run.updatedJobs], ["unchanged", run.unchangedJobs], ["failed", run.failedJobs]];
  for (const [kind, count] of segments) {
    if (!count || !total) continue;
    const seg = h("span", { class: `seg-${kind}`, title: `${kind}: ${count}` });
    seg.style.width = `${(Number(count) / total) * 100}%`;
    bar.append(seg);
  }
  const label = run.meta && run.meta.notModified ? "not modified" : total ? `${fmtNumber(total)} items` : run.status === "failed" ? "no items" : "empty feed";
  return h("div", { class: "progress", dataset: { progress: "100" } }, bar, h("div", { class: "bar-label" }, label));
}

export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** "Page 3 of 40 · 1,000 jobs" when the API sent a total; "Page 3" when it did not count (filtered lists). */
export function pageText(page, total, limit, noun) {
  if (total === null || total === undefined) return `Page ${page}`;
  if (!total) return "";
  return `Page ${page} of ${fmtNumber(Math.max(1, Math.ceil(total / limit)))} · ${fmtNumber(total)} ${noun}`;
}
