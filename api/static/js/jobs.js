// The jobs browser: search by title or company, filter by feed, page through, open one job.

import { api, query } from "./api.js";
import { debounce, fmtDateTime, fmtRelative, h, pageText } from "./format.js";

const LIMIT = 25;

export class JobsView {
  constructor({ toast }) {
    this.toast = toast;
    this.page = 1;
    this.total = null;
    this.next = null;
    this.cursors = [null]; // cursors[i] opens page i + 1 (page 1 needs none): deep pages by keyset, never by skip
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
    const wanted = Math.min(Math.max(1, page), this.cursors.length);
    const after = this.cursors[wanted - 1];
    try {
      const data = await api(`/api/jobs${query({ limit: LIMIT, after, q: this.search.value.trim(), source: this.source.value })}`);
      if (ticket !== this.ticket) return;
      this.loaded = true;
      this.page = wanted;
      this.total = data.total;
      this.next = data.next;
      this.cursors.length = wanted;
      this.cursors.push(data.next);
      this.items = data.items;
      this.render();
    } catch (err) {
      this.toast(`Could not load jobs: ${err.message}`, "error");
    }
  }

  render() {
    document.getElementById("jobs-empty").hidden = this.items.length > 0;
    document.getElementById("jobs-page-text").textContent = this.items.length ? pageText(this.page, this.total, LIMIT, "jobs") : "";
    document.querySelector("#jobs-pager [data-page=prev]").disabled = this.page <= 1;
    document.querySelector("#jobs-pager [data-page=next]").disabled = !this.next;
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
