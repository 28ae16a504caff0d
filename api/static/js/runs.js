// Import history: the paginated table, its filters, live updates by runId, and the run detail view.

import { api, query } from "./api.js";
import { FINISHED, accounted, badge, fmtDateTime, fmtDuration, fmtNumber, fmtRelative, h, isNewer, pageText, progressBar } from "./format.js";

const LIMIT = 25;

export class RunsView {
  constructor({ toast, onRunChanged }) {
    this.toast = toast;
    this.onRunChanged = onRunChanged;
    this.page = 1;
    this.total = null; // null: the API did not count (a filtered list)
    this.next = null;
    this.cursors = [null]; // cursors[i] opens page i + 1: deep pages by keyset, and rows arriving live shift nothing
    this.runs = new Map(); // runId → latest snapshot shown
    this.latest = new Map(); // runId → newest snapshot streamed recently, so a slower REST answer cannot roll a row back
    this.ticket = 0;
    this.body = document.getElementById("runs-body");
    this.empty = document.getElementById("runs-empty");
    this.pageText = document.getElementById("runs-page-text");
    this.statusFilter = document.getElementById("filter-status");
    this.sourceFilter = document.getElementById("filter-source");
    this.dialog = document.getElementById("run-detail");
    this.detailRunId = null;

    this.statusFilter.addEventListener("change", () => this.reload(1));
    this.sourceFilter.addEventListener("change", () => this.reload(1));
    document.querySelector("#runs-pager [data-page=prev]").addEventListener("click", () => this.reload(this.page - 1));
    document.querySelector("#runs-pager [data-page=next]").addEventListener("click", () => this.reload(this.page + 1));
    this.body.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-run-id]");
      if (row) location.hash = `#/runs/${encodeURIComponent(row.dataset.runId)}`;
    });
    this.dialog.addEventListener("close", () => {
      this.detailRunId = null;
      if (location.hash.startsWith("#/runs/")) history.replaceState(null, "", "#/imports");
    });
    this.dialog.querySelector("[data-close]").addEventListener("click", () => this.dialog.close());
    setInterval(() => this.tick(), 1000);
  }

  filters() {
    return { status: this.statusFilter.value, source: this.sourceFilter.value };
  }

  async reload(page = this.page) {
    const wanted = Math.min(Math.max(1, page), this.cursors.length);
    const after = this.cursors[wanted - 1];
    const ticket = ++this.ticket; // overlapping reloads: only the latest answer is shown
    try {
      const data = await api(`/api/import-logs${query({ limit: LIMIT, after, ...this.filters() })}`);
      if (ticket !== this.ticket) return;
      this.page = wanted;
      this.total = data.total;
      this.next = data.next;
      this.cursors.length = wanted;
      this.cursors.push(data.next);
      this.runs = new Map();
      this.body.replaceChildren(...data.items.map((item) => {
        const streamed = this.latest.get(item.runId);
        const run = streamed && isNewer(streamed, item) ? { ...item, ...streamed } : item;
        this.runs.set(run.runId, run);
        return this.row(run);
      }));
      this.renderChrome();
    } catch (err) {
      this.toast(`Could not load import history: ${err.message}`, "error");
    }
  }

  setSources(feeds) {
    const current = this.sourceFilter.value;
    this.sourceFilter.replaceChildren(h("option", { value: "" }, "All feeds"),
      ...feeds.map((feed) => h("option", { value: feed.url }, feed.name || feed.url)));
    this.sourceFilter.value = feeds.some((feed) => feed.url === current) ? current : "";
  }

  matches(run) {
    const { status, source } = this.filters();
    return (!status || status.split(",").includes(run.status)) && (!source || source === run.sourceUrl);
  }

  /** A snapshot from the stream (or a just-requested run): update its row, or add it on the first page. */
  apply(run) {
    this.remember(run);
    const previous = this.runs.get(run.runId);
    if (previous && !isNewer(run, previous)) return;
    const merged = previous ? { ...previous, ...run } : run;
    const existing = this.body.querySelector(`tr[data-run-id="${CSS.escape(run.runId)}"]`);
    if (existing) {
      this.runs.set(run.runId, merged);
      const row = this.row(merged);
      if (previous && previous.status !== merged.status) row.classList.add("flash");
      existing.replaceWith(row);
    } else if (this.page === 1 && this.matches(run)) {
      this.runs.set(run.runId, merged);
      const row = this.row(merged);
      row.classList.add("flash");
      this.body.prepend(row);
      if (this.total !== null) this.total += 1;
      while (this.body.children.length > LIMIT) {
        this.runs.delete(this.body.lastElementChild.dataset.runId);
        this.body.lastElementChild.remove();
      }
      this.renderChrome();
    }
    if (this.detailRunId === run.runId && run.failures) this.renderDetail(merged);
    this.onRunChanged(run);
  }

  remember(run) {
    const known = this.latest.get(run.runId);
    if (known && !isNewer(run, known)) return;
    this.latest.delete(run.runId);
    this.latest.set(run.runId, run);
    if (this.latest.size > 500) this.latest.delete(this.latest.keys().next().value);
  }

  renderChrome() {
    this.empty.hidden = this.body.children.length > 0;
    this.pageText.textContent = this.body.children.length ? pageText(this.page, this.total, LIMIT, "runs") : "";
    document.querySelector("#runs-pager [data-page=prev]").disabled = this.page <= 1;
    document.querySelector("#runs-pager [data-page=next]").disabled = !this.next;
  }

  row(run) {
    const started = run.startedAt || run.requestedAt;
    const fields = ["fetched", "new", "updated", "unchanged", "failed"];
    const numbers = [run.totalFetched, run.newJobs, run.updatedJobs, run.unchangedJobs, run.failedJobs].map((value, index) =>
      h("td", { class: `num${Number(value || 0) === 0 ? " zero" : ""}`, dataset: { field: fields[index] } }, fmtNumber(value)));
    return h("tr", { class: "clickable", dataset: { runId: run.runId, status: run.status }, title: "Show details" },
      h("td", {},
        h("div", { class: "source-name" }, run.sourceName || run.sourceUrl),
        h("div", { class: "source-url", title: run.sourceUrl }, run.sourceUrl)),
      h("td", {}, badge(run.status)),
      h("td", { class: "nowrap", title: fmtDateTime(started) }, h("span", { dataset: { time: started || "" } }, fmtRelative(started))),
      h("td", { class: "num" }, this.durationCell(run)),
      h("td", { class: "progress-col" }, progressBar(run)),
      ...numbers);
  }

  durationCell(run) {
    if (FINISHED.has(run.status)) return fmtDuration(run.durationMs);
    if (run.status === "running" && run.startedAt) return h("span", { dataset: { since: run.startedAt } }, fmtDuration(Date.now() - new Date(run.startedAt)));
    return "–";
  }

  /** Running durations count up every second; relative start times are refreshed with them. */
  tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll("[data-since]")) el.textContent = fmtDuration(now - new Date(el.dataset.since));
    for (const el of this.body.querySelectorAll("[data-time]")) el.textContent = fmtRelative(el.dataset.time || null, now);
  }

  async openDetail(runId) {
    this.detailRunId = runId;
    document.getElementById("run-detail-body").replaceChildren(h("p", { class: "muted" }, "Loading…"));
    if (!this.dialog.open) this.dialog.showModal();
    try {
      const run = await api(`/api/import-logs/${encodeURIComponent(runId)}`);
      const newer = this.runs.get(runId);
      this.renderDetail(newer && newer.failures && isNewer(newer, run) ? newer : run);
    } catch (err) {
      document.getElementById("run-detail-body").replaceChildren(h("div", { class: "error-box" }, err.message));
    }
  }

  renderDetail(run) {
    if (this.detailRunId !== run.runId) return;
    this.dialog.dataset.runId = run.runId;
    this.dialog.dataset.status = run.status;
    document.getElementById("run-detail-id").textContent = `Run ${run.runId}`;
    document.getElementById("run-detail-title").replaceChildren(run.sourceName || run.sourceUrl, " ", badge(run.status));
    const link = document.getElementById("run-detail-url");
    link.textContent = run.sourceUrl;
    link.href = /^https?:\/\//.test(run.sourceUrl) ? run.sourceUrl : "#";

    const stat = (label, value, kind) => h("div", { class: "stat", dataset: { kind: Number(value || 0) > 0 ? kind : undefined } }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, fmtNumber(value)));
    const meta = run.meta || {};
    const facts = [
      ["Trigger", run.trigger],
      ["Requested", fmtDateTime(run.requestedAt)],
      ["Started", fmtDateTime(run.startedAt)],
      ["Finished", fmtDateTime(run.finishedAt)],
      ["Duration", FINISHED.has(run.status) ? fmtDuration(run.durationMs) : "running…"],
      ["Accounted", `${fmtNumber(accounted(run))} of ${fmtNumber(run.totalFetched)}`],
      ["HTTP", meta.httpStatus ? `${meta.httpStatus}${meta.notModified ? " (not modified)" : ""}` : "–"],
      ["Payload", meta.bytes !== undefined ? `${fmtNumber(meta.bytes)} bytes` : "–"],
      ["Sink batches", meta.batches !== undefined ? fmtNumber(meta.batches) : "–"],
      ["Replay of", meta.replayOf || "–"],
    ];
    const failures = run.failures || [];
    const body = [
      progressBar(run),
      h("div", { class: "stat-grid" },
        stat("Fetched", run.totalFetched), stat("New", run.newJobs, "new"), stat("Updated", run.updatedJobs),
        stat("Unchanged", run.unchangedJobs), stat("Failed", run.failedJobs, "failed")),
      run.error ? h("div", { class: "error-box", id: "run-detail-error" }, run.error) : null,
      h("dl", { class: "kv" }, facts.flatMap(([key, value]) => [h("dt", {}, key), h("dd", {}, value ?? "–")])),
      h("h4", {}, `Failures (${fmtNumber(run.failedJobs)})`),
      failures.length
        ? h("table", { class: "data failures", id: "run-failures" },
            h("thead", {}, h("tr", {}, h("th", {}, "Item"), h("th", {}, "Reason"), h("th", {}, "Stage"))),
            h("tbody", {}, failures.map((failure) => h("tr", { dataset: { failure: failure.key } },
              h("td", { class: "key mono" }, failure.key), h("td", {}, failure.reason), h("td", {}, failure.stage)))))
        : h("p", { class: "muted", id: "run-failures-none" }, "No failed items."),
      run.failuresTruncated ? h("p", { class: "muted small" }, "Only the first failures are kept (MAX_FAILURES_KEPT).") : null,
      FINISHED.has(run.status)
        ? h("div", { class: "row-actions" }, h("button", { type: "button", id: "run-replay", title: "Parse this run's stored payload again as a new run (nothing is fetched)" }, "Replay"))
        : null,
    ];
    document.getElementById("run-detail-body").replaceChildren(...body.filter(Boolean));
    const replay = document.getElementById("run-replay");
    if (replay) replay.addEventListener("click", () => this.replay(run, replay));
  }

  async replay(run, button) {
    button.disabled = true;
    try {
      const data = await api("/api/import/replay", { method: "POST", body: { runId: run.runId } });
      this.toast(`Replay of ${run.sourceName || run.sourceUrl} requested`);
      location.hash = `#/runs/${encodeURIComponent(data.runs[0].runId)}`;
    } catch (err) {
      this.toast(err.message, "error");
      button.disabled = false;
    }
  }
}
