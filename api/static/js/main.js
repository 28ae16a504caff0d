// Wires the dashboard together: tabs (hash routes), the live stream, the run button, token and toasts.

import { api, getToken, openSession, setToken } from "./api.js";
import { FeedsView } from "./feeds.js";
import { badge, debounce, fmtNumber, fmtRelative, h } from "./format.js";
import { JobsView } from "./jobs.js";
import { connectLive } from "./live.js";
import { RunsView } from "./runs.js";

function toast(message, kind = "info") {
  const item = h("div", { class: "toast", dataset: { kind } }, message);
  document.getElementById("toasts").append(item);
  setTimeout(() => item.remove(), kind === "error" ? 7000 : 3500);
}

const refreshTiles = debounce(async () => {
  try {
    const [active, latest, jobs] = await Promise.all([
      api("/api/import-logs?status=pending,running&limit=1&total=1"), // few runs are active: an exact count is cheap
      api("/api/import-logs?limit=1"),
      api("/api/jobs?limit=1"), // unfiltered: total is the collection's estimated count, no scan
    ]);
    document.getElementById("tile-active").textContent = fmtNumber(active.total);
    document.getElementById("tile-jobs").textContent = fmtNumber(jobs.total);
    const run = latest.items[0];
    document.getElementById("tile-latest").replaceChildren(...(run
      ? [badge(run.status), h("span", { class: "muted" }, fmtRelative(run.startedAt || run.requestedAt))]
      : ["–"]));
  } catch {
    /* tiles are a summary; the table shows the error */
  }
}, 400);

const runs = new RunsView({ toast, onRunChanged: () => refreshTiles() });
const jobs = new JobsView({ toast });
const feeds = new FeedsView({
  toast,
  onChanged: (items) => {
    runs.setSources(items);
    jobs.setSources(items);
    document.getElementById("tile-feeds").textContent = `${items.filter((f) => f.enabled).length} / ${items.length}`;
  },
  onRunRequested: (requested) => addRequested(requested),
});

/** Show requested runs at once as pending; the stream then moves them along. */
function addRequested(requested) {
  const now = new Date().toISOString();
  for (const { runId, sourceUrl } of requested) {
    const feed = feeds.feeds.find((f) => f.url === sourceUrl);
    runs.apply({ runId, sourceUrl, sourceName: feed ? feed.name : sourceUrl, status: "pending", requestedAt: now, startedAt: null,
                 totalFetched: 0, newJobs: 0, updatedJobs: 0, unchangedJobs: 0, failedJobs: 0, trigger: "manual" });
  }
}

// --- pipeline health ---------------------------------------------------------------------------
// /health is 503 when Kafka or the store is down, or when run requests wait and no worker consumes
// them: say so above the runs, which would otherwise stay "pending" with no reason given.
const banner = document.getElementById("pipeline-banner");
const HEALTH_PARTS = { workers: "Workers", kafka: "Kafka", mongo: "MongoDB" };
async function checkHealth() {
  let body = null;
  try {
    const response = await fetch("/health", { headers: { Accept: "application/json" } });
    body = await response.json().catch(() => null);
  } catch {
    body = { api: "error: the API is not reachable" };
  }
  const problems = Object.entries({ ...HEALTH_PARTS, api: "API" })
    .filter(([key]) => body && typeof body[key] === "string" && body[key].startsWith("error"))
    .map(([key, label]) => `${label}: ${body[key].replace(/^error: /, "")}`);
  banner.hidden = problems.length === 0;
  banner.replaceChildren(...(problems.length ? [h("b", {}, "The pipeline is not making progress."), problems.join(" · ")] : []));
}
checkHealth();
setInterval(checkHealth, 10000);

// --- run import now --------------------------------------------------------------------------
const runButton = document.getElementById("run-import");
runButton.addEventListener("click", async () => {
  runButton.disabled = true;
  try {
    const data = await api("/api/import/run", { method: "POST" });
    const busy = (data.skipped || []).length; // feeds with a run pending or running are not started twice
    if (!data.runs.length) {
      toast(busy ? `All ${busy} enabled feed${busy === 1 ? " is" : "s are"} already importing`
                 : "No enabled feeds to import: add one under Feeds", busy ? undefined : "error");
    } else {
      addRequested(data.runs);
      setTimeout(checkHealth, 500);
      toast(`Import requested for ${data.runs.length} feed${data.runs.length === 1 ? "" : "s"}` +
            (busy ? ` (${busy} already importing)` : ""));
      if (!location.hash.startsWith("#/imports")) location.hash = "#/imports";
    }
  } catch (err) {
    toast(`Run import: ${err.message}`, "error");
  } finally {
    runButton.disabled = false;
  }
});

// --- token -----------------------------------------------------------------------------------
const tokenDialog = document.getElementById("token-dialog");
const tokenInput = document.getElementById("api-token");
function openToken() {
  tokenInput.value = getToken();
  tokenDialog.showModal();
}
document.getElementById("token-open").addEventListener("click", openToken);
document.getElementById("token-form").addEventListener("submit", async () => {
  const previous = getToken();
  setToken(tokenInput.value.trim());
  toast(getToken() ? "Token saved in this browser" : "Token cleared");
  // A new token may open reads that were refused: take a session and load everything again.
  if (getToken() && getToken() !== previous && (await openSession(getToken()))) location.reload();
});
document.getElementById("token-clear").addEventListener("click", () => {
  setToken("");
  tokenInput.value = "";
  tokenDialog.close();
  fetch("/api/session", { method: "DELETE" }).catch(() => {});
  toast("Token cleared");
});
window.addEventListener("auth-required", () => {
  if (!tokenDialog.open) openToken();
});

// --- routes ----------------------------------------------------------------------------------
function route() {
  const hash = location.hash || "#/imports";
  const [, section, id] = hash.match(/^#\/([^/]+)(?:\/(.+))?$/) || [];
  const tab = section === "runs" ? "imports" : ["imports", "feeds", "jobs"].includes(section) ? section : "imports";
  for (const view of document.querySelectorAll("[data-view]")) view.hidden = view.dataset.view !== tab;
  for (const link of document.querySelectorAll("[data-tab]")) {
    if (link.dataset.tab === tab) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (tab === "jobs" && !jobs.loaded) jobs.reload(1);
  if (tab === "feeds") feeds.reload();
  if (section === "runs" && id) runs.openDetail(decodeURIComponent(id));
  else if (runs.dialog.open) runs.dialog.close();
  if (tab !== "jobs" && jobs.dialog.open) jobs.dialog.close();
}
window.addEventListener("hashchange", route);

// --- live ------------------------------------------------------------------------------------
// The stream cannot send the token: renew the session cookie first (it expires; a no-op without API_TOKEN).
await openSession(getToken());
const live = document.getElementById("live-status");
const LIVE_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" };
connectLive({
  onSnapshot: (run) => runs.apply(run),
  onResync: () => {
    runs.reload();
    refreshTiles();
  },
  onState: (state) => {
    live.dataset.state = state;
    live.querySelector(".live-text").textContent = LIVE_TEXT[state] || state;
  },
});

await Promise.all([runs.reload(1), feeds.reload()]);
refreshTiles();
route();
document.body.dataset.ready = "true";
