// The feed registry: add, enable/disable, run one feed now, delete.

import { api } from "./api.js";
import { badge, fmtRelative, h } from "./format.js";

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

  async add() {
    const url = document.getElementById("feed-url").value.trim();
    const name = document.getElementById("feed-name").value.trim();
    const format = document.getElementById("feed-format").value;
    const mappingText = document.getElementById("feed-mapping").value.trim();
    const body = { url };
    if (name) body.name = name;
    if (format !== "auto") body.format = format;
    if (mappingText) {
      try {
        body.mapping = JSON.parse(mappingText);
      } catch (err) {
        this.toast(`Mapping is not valid JSON: ${err.message}`, "error");
        return;
      }
    }
    const button = document.getElementById("feed-add");
    button.disabled = true;
    try {
      const feed = await api("/api/feeds", { method: "POST", body });
      this.form.reset();
      this.toast(`Added ${feed.name}`);
      await this.reload();
    } catch (err) {
      this.toast(err.message, "error");
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
