/* The batch page (/migration-batches/<id>/): per-VM rows and overall progress, drawn
 * from the recorded state and kept current over /ws/migration-batches/<id>/ (a
 * snapshot first, then the batch after every change of it or of a child; closed after
 * its final state). A dropped socket re-opens with backoff, as the migration view's. */
(function () {
  "use strict";

  const { api, bytes, decimal, readJson } = window.Portal;
  const VOCABULARY = readJson("portal-vocabulary");
  const BATCH = readJson("batch-vocabulary");

  function field(root, name) { return root.querySelector("[data-field=" + name + "]"); }

  function setBadge(element, status, labels) {
    element.className = "badge badge-" + status;
    element.textContent = labels[status] || status;
  }

  class BatchView {
    constructor(root) {
      this.root = root;
      this.batchId = root.dataset.batchId;
      this.finished = false;
    }

    render(batch) {
      const root = this.root;
      root.dataset.status = batch.status;
      setBadge(field(root, "status"), batch.status, BATCH.status_labels);
      const p = batch.progress;
      const percent = Number(p.percent || 0);
      field(root, "percent").textContent = decimal(percent, 1);
      field(root, "fill").style.width = percent + "%";
      field(root, "bar").setAttribute("aria-valuenow", percent.toFixed(1));
      field(root, "vms-done").textContent = p.vms_done;
      field(root, "vms-total").textContent = p.vms_total;
      field(root, "vms-succeeded").textContent = p.vms_succeeded;
      field(root, "vms-failed").textContent = p.vms_failed;
      field(root, "vms-cancelled").textContent = p.vms_cancelled;
      field(root, "vms-running").textContent = p.vms_running;
      field(root, "bytes-moved").textContent = bytes(p.bytes_moved);
      field(root, "bytes-total").textContent = bytes(p.bytes_total);
      for (const child of batch.children) {
        const row = root.querySelector("tr[data-child='" + child.id + "']");
        if (!row) continue;
        row.dataset.status = child.status;
        setBadge(field(row, "status"), child.status, VOCABULARY.status_labels);
        field(row, "phase").textContent = VOCABULARY.phase_labels[child.phase] || child.phase || "";
        const childPercent = child.status === "succeeded" ? 100 : Number(child.percent || 0);
        field(row, "percent").textContent = decimal(childPercent, 1);
        field(row, "fill").style.width = childPercent + "%";
        const moved = child.status === "succeeded" ? child.transferred_bytes : child.data_processed_bytes;
        field(row, "moved").textContent = bytes(moved);
        const reason = VOCABULARY.failure_reason_labels[child.failure_reason];
        field(row, "error").textContent = (reason ? reason + ": " : "") + (child.error || "");
      }
      this.finished = BATCH.final_statuses.includes(batch.status);
      const controls = field(root, "controls");
      if (controls) controls.hidden = this.finished || Boolean(batch.cancel_requested_at);
    }

    connection(text) { field(this.root, "connection").textContent = text; }

    follow() {
      let attempt = 0;
      const open = () => {
        if (this.finished) return;
        this.connection(gettext("connecting"));
        const scheme = location.protocol === "https:" ? "wss://" : "ws://";
        const socket = new WebSocket(scheme + location.host + "/ws/migration-batches/" + this.batchId + "/");
        socket.onopen = () => { attempt = 0; this.connection(gettext("live")); };
        socket.onmessage = (event) => this.render(JSON.parse(event.data).batch);
        socket.onclose = (event) => {
          if (this.finished) { this.connection(gettext("closed")); return; }
          if (event.code === 4401 || event.code === 4403) { this.connection(gettext("refused")); return; }
          const delay = Math.min(10000, 500 * 2 ** attempt);
          attempt += 1;
          this.connection(interpolate(gettext("reconnecting in %s s"), [decimal(delay / 1000, 1)]));
          setTimeout(open, delay);
        };
      };
      open();
    }

    bindCancel() {
      const button = this.root.querySelector("[data-action=cancel-batch]");
      if (!button) return;
      button.addEventListener("click", async () => {
        if (!window.confirm(gettext("Cancel this batch? Queued migrations are cancelled, running ones are asked to stop."))) return;
        button.disabled = true;
        const result = await api("POST", "/api/migration-batches/" + this.batchId + "/cancel/");
        const error = field(this.root, "control-error");
        if (result.status === 200) { error.hidden = true; this.render(result.body); return; }
        error.textContent = result.body.detail || JSON.stringify(result.body);
        error.hidden = false;
        button.disabled = false;
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.getElementById("batch-page");
    if (!root) return;
    const view = new BatchView(root);
    view.render(readJson("batch-data"));
    view.bindCancel();
    if (!view.finished) view.follow();
  });
})();
