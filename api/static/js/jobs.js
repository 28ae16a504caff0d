// The jobs browser: search by title or company, filter by feed, page through, open one job.

import { api, query } from "./api.js";
import { debounce, fmtDateTime, fmtNumber, fmtRelative, h } from "./format.js";

const LIMIT = 25;

export class JobsView {
  constructor({ toast }) {
    this.toast = toast;
    this.page = 1;
    this.total = 0;
    this.loaded = false;
    this.items = [];
    this.ticket = 0;
    this.body = document.getElementById("jobs-body");
    this.search = document.getElementById("jobs-q");
    this.source = document.getElementById("jobs-source");
    this.dialog = document.getElementById("job-detail");
    this.search.addEventListener("input", debounce(() => this.reload(1), 250));
    this.source.addEventListener("change", () => this.reload(1));
    document.querySelector("#jobs-pager [data-page=prev]").addEventListener("click", () => this.reload(this.page - 1));
    document.querySelector("#jobs-pager [data-page=next]").addEventListener("click", () => this.reload(this.page + 1));
    this.body.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      const row = event.target.closest("tr[data-dedupe-key]");
      if (row) this.openDetail(row.dataset.dedupeKey);
    });
    this.dialog.querySelector("[data-close]").addEventListener("click", () => this.dialog.close());
  }

  setSources(feeds) {
    const current = this.source.value;
    this.source.replaceChildren(h("option", { value: "" }, "All feeds"), ...feeds.map((feed) => h("option", { value: feed.url }, feed.name || feed.url)));
    this.source.value = feeds.some((feed) => feed.url === current) ? current : "";
  }

  async reload(page = this.page) {
    const ticket = ++this.ticket; // typing fires overlapping searches: only the latest answer is shown
    try {
      const data = await api(`/api/jobs${query({ page: Math.max(1, page), limit: LIMIT, q: this.search.value.trim(), source: this.source.value })}`);
      if (ticket !== this.ticket) return;
      this.loaded = true;
      this.page = data.page;
      this.total = data.total;
      this.items = data.items;
      this.render();
    } catch (err) {
      this.toast(`Could not load jobs: ${err.message}`, "error");
    }
  }

  render() {
    const pages = Math.max(1, Math.ceil(this.total / LIMIT));
    document.getElementById("jobs-empty").hidden = this.items.length > 0;
    document.getElementById("jobs-page-text").textContent = this.total ? `Page ${this.page} of ${pages} · ${fmtNumber(this.total)} jobs` : "";
    document.querySelector("#jobs-pager [data-page=prev]").disabled = this.page <= 1;
    document.querySelector("#jobs-pager [data-page=next]").disabled = this.page >= pages;
    this.body.replaceChildren(...this.items.map((job) => h("tr", { class: "clickable", dataset: { dedupeKey: job.dedupeKey } },
      h("td", {}, job.url && /^https?:\/\//.test(job.url) ? h("a", { href: job.url, target: "_blank", rel: "noopener noreferrer" }, job.title || "(untitled)") : job.title || "(untitled)"),
      h("td", {}, job.company || "–"),
      h("td", {}, job.location || "–"),
      h("td", { class: "muted" }, job.sourceName || job.sourceUrl),
      h("td", { title: fmtDateTime(job.publishedAt) }, fmtRelative(job.publishedAt)),
      h("td", { class: "num" }, job.version))));
  }

  async openDetail(key) {
    try {
      const job = await api(`/api/jobs/${encodeURIComponent(key)}`);
      document.getElementById("job-detail-company").textContent = [job.company, job.location].filter(Boolean).join(" · ");
      document.getElementById("job-detail-title").textContent = job.title || "(untitled)";
      const facts = [
        ["Feed", job.sourceName || job.sourceUrl], ["Published", fmtDateTime(job.publishedAt)], ["Type", job.jobType || "–"],
        ["Region", job.region || "–"], ["Version", job.version], ["First seen", fmtDateTime(job.createdAt)],
        ["Last changed", fmtDateTime(job.updatedAt)], ["Last run", job.lastRunId || "–"], ["Key", job.dedupeKey],
      ];
      document.getElementById("job-detail-body").replaceChildren(
        (job.categories || []).length ? h("div", { class: "chips" }, job.categories.map((c) => h("span", { class: "chip" }, c))) : "",
        h("dl", { class: "kv", style: undefined }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")])),
        job.url && /^https?:\/\//.test(job.url) ? h("p", {}, h("a", { href: job.url, target: "_blank", rel: "noopener noreferrer" }, "Open the posting ↗")) : "",
        h("div", { class: "description" }, job.description || "No description."));
      if (!this.dialog.open) this.dialog.showModal();
    } catch (err) {
      this.toast(err.message, "error");
    }
  }
}
