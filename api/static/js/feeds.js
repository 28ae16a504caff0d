// The feed registry: preview, add, enable/disable, run one feed now, delete.

import { api } from "./api.js";
import { badge, fmtDateTime, fmtRelative, h } from "./format.js";

export class FeedsView {
  constructor({ toast, onChanged, onRunRequested }) {
    this.toast = toast;
    this.onChanged = onChanged;
    this.onRunRequested = onRunRequested;
    this.feeds = [];
    this.ticket = 0;
    this.body = document.getElementById("feeds-body");
    this.form = document.getElementById("feed-form");
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.add();
    });
    document.getElementById("feed-preview").addEventListener("click", () => this.preview());
    this.body.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const feed = this.feeds.find((item) => item.id === button.closest("tr").dataset.feedId);
      if (feed) this.act(button.dataset.action, feed, button);
    });
  }

  async reload() {
    const ticket = ++this.ticket; // overlapping reloads: only the latest answer is shown
    try {
      const data = await api("/api/feeds");
      if (ticket !== this.ticket) return this.feeds;
      this.feeds = data.items;
      this.render();
      this.onChanged(this.feeds);
    } catch (err) {
      this.toast(`Could not load feeds: ${err.message}`, "error");
    }
    return this.feeds;
  }

  render() {
    const enabled = this.feeds.filter((feed) => feed.enabled).length;
    document.getElementById("feeds-count").textContent = `${enabled} of ${this.feeds.length} enabled`;
    document.getElementById("feeds-empty").hidden = this.feeds.length > 0;
    this.body.replaceChildren(...this.feeds.map((feed) => {
      const run = feed.lastRun;
      return h("tr", { dataset: { feedId: feed.id, enabled: String(feed.enabled) } },
        h("td", { class: "source-name" }, feed.name, feed.format && feed.format !== "auto" ? h("span", { class: "muted small", title: feed.mapping ? JSON.stringify(feed.mapping) : null }, ` ${feed.format}`) : null),
        h("td", {}, h("a", { href: feed.url, target: "_blank", rel: "noopener noreferrer", class: "source-url", title: feed.url }, feed.url)),
        h("td", {}, run ? h("span", {}, badge(run.status), " ", h("span", { class: "muted small" }, fmtRelative(run.startedAt || run.requestedAt))) : h("span", { class: "muted" }, "never")),
        h("td", {}, h("button", { type: "button", class: "switch", role: "switch", "aria-checked": String(feed.enabled), "aria-label": feed.enabled ? "Disable feed" : "Enable feed", title: feed.enabled ? "Disable" : "Enable", dataset: { action: "toggle" } })),
        h("td", {}, h("div", { class: "row-actions" },
          h("button", { type: "button", class: "small", dataset: { action: "run" }, disabled: !feed.enabled }, "Run now"),
          h("button", { type: "button", class: "small ghost danger", dataset: { action: "delete" } }, "Delete"))));
    }));
  }

  // The form's url, format and mapping (the body of an add and of a preview); null when the mapping is not JSON.
  formBody() {
    const body = { url: document.getElementById("feed-url").value.trim() };
    const format = document.getElementById("feed-format").value;
    const mappingText = document.getElementById("feed-mapping").value.trim();
    if (format !== "auto") body.format = format;
    if (mappingText) {
      try {
        body.mapping = JSON.parse(mappingText);
      } catch (err) {
        this.toast(`Mapping is not valid JSON: ${err.message}`, "error");
        return null;
      }
    }
    return body;
  }

  async add() {
    const body = this.formBody();
    if (!body) return;
    const name = document.getElementById("feed-name").value.trim();
    if (name) body.name = name;
    const button = document.getElementById("feed-add");
    button.disabled = true;
    try {
      const feed = await api("/api/feeds", { method: "POST", body });
      this.form.reset();
      document.getElementById("feed-preview-box").hidden = true;
      this.toast(`Added ${feed.name}`);
      await this.reload();
    } catch (err) {
      this.toast(err.message, "error");
    } finally {
      button.disabled = false;
    }
  }

  // How the feed reads before it is saved: the first postings, the failed items; the API writes nothing.
  async preview() {
    const body = this.formBody();
    if (!body) return;
    const url = body.url;
    const box = document.getElementById("feed-preview-box");
    const button = document.getElementById("feed-preview");
    if (!url) {
      this.toast("Enter the feed's URL to preview it", "error");
      return;
    }
    button.disabled = true;
    box.hidden = false;
    document.getElementById("feed-preview-summary").textContent = "Loading…";
    document.getElementById("feed-preview-body").replaceChildren();
    document.getElementById("feed-preview-failures").replaceChildren();
    try {
      const data = await api("/api/feeds/preview", { method: "POST", body });
      document.getElementById("feed-preview-title").textContent = `Preview: ${data.title || url}`;
      document.getElementById("feed-preview-summary").textContent =
        `${data.format} · ${data.totalFetched} items · ${data.failedCount ?? data.failures.length} failed · first ${data.items.length} shown`;
      document.getElementById("feed-preview-body").replaceChildren(...data.items.map((item) => h("tr", {},
        h("td", {}, item.title), h("td", {}, item.company || "–"), h("td", {}, item.location || "–"),
        h("td", {}, fmtDateTime(item.publishedAt)), h("td", { class: "mono small" }, item.externalId))));
      const failures = data.failures.map((failure) => h("li", {}, h("span", { class: "mono" }, failure.key || `item ${failure.seq}`), `: ${failure.reason}`));
      if (data.error) failures.unshift(h("li", {}, data.error));
      document.getElementById("feed-preview-failures").replaceChildren(...(failures.length ? [h("h4", {}, "Failures"), h("ul", {}, failures)] : []));
    } catch (err) {
      document.getElementById("feed-preview-summary").textContent = "";
      document.getElementById("feed-preview-failures").replaceChildren(h("div", { class: "error-box" }, err.message));
    } finally {
      button.disabled = false;
    }
  }

  async act(action, feed, button) {
    button.disabled = true;
    try {
      if (action === "toggle") {
        await api(`/api/feeds/${feed.id}`, { method: "PATCH", body: { enabled: !feed.enabled } });
        this.toast(`${feed.name} ${feed.enabled ? "disabled" : "enabled"}`);
      } else if (action === "delete") {
        if (!confirm(`Delete feed ${feed.name}?\n${feed.url}\n\nIts import history and jobs are kept.`)) return;
        await api(`/api/feeds/${feed.id}`, { method: "DELETE" });
        this.toast(`Deleted ${feed.name}`);
      } else if (action === "run") {
        const data = await api("/api/import/run", { method: "POST", body: { feeds: [feed.url] } });
        this.onRunRequested(data.runs);
        this.toast(data.runs.length ? `Import of ${feed.name} requested` : `${feed.name} is already importing`);
      }
      await this.reload();
    } catch (err) {
      this.toast(err.message, "error");
    } finally {
      button.disabled = false;
    }
  }
}
