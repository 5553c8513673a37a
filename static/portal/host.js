/* The host page: enter / leave maintenance, and the evacuation (dry-run plan first,
 * then Confirm). Every decision is the API's; this only shows it. */
(function () {
  "use strict";
  const { api } = window.Portal;

  function errorText(result) {
    const body = result.body || {};
    if (body.detail) return body.detail;
    return Object.entries(body)
      .map(([field, messages]) => field + ": " + [].concat(messages).join(" "))
      .join("; ") || interpolate(gettext("The portal answered %s."), [result.status]);
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.append(td);
    return td;
  }

  function reasonsCell(row, reasons) {
    const td = document.createElement("td");
    const list = document.createElement("ul");
    list.className = "reasons";
    for (const reason of reasons) {
      const item = document.createElement("li");
      item.textContent = reason;
      list.append(item);
    }
    td.append(list);
    row.append(td);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.getElementById("host-page");
    if (!page) return;
    const hostId = page.dataset.hostId;
    const pageError = document.getElementById("host-error");

    const form = document.getElementById("maintenance-form");
    if (form) {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const submit = document.getElementById("maintenance-submit");
        const reasonError = form.querySelector("[data-error-for=reason]");
        reasonError.hidden = true;
        const body = { enabled: form.elements.namedItem("enabled").value === "true" };
        const reason = form.elements.namedItem("reason");
        if (reason) body.reason = reason.value;
        submit.disabled = true;
        const result = await api("POST", "/api/hosts/" + hostId + "/maintenance/", body);
        submit.disabled = false;
        if (result.status === 200) { location.reload(); return; }
        if (result.status === 400 && result.body.reason) {
          reasonError.textContent = [].concat(result.body.reason).join(" ");
          reasonError.hidden = false;
          return;
        }
        pageError.textContent = errorText(result);
        pageError.hidden = false;
      });
    }

    const dialog = document.getElementById("evacuate-dialog");
    if (!dialog) return;
    const loading = document.getElementById("evacuation-loading");
    const planTable = document.getElementById("evacuation-plan");
    const stayTable = document.getElementById("evacuation-unmovable");
    const stayTitle = document.getElementById("evacuation-unmovable-title");
    const confirm = document.getElementById("evacuate-confirm");
    const evacError = document.getElementById("evacuate-error");

    function showError(text) {
      evacError.textContent = text;
      evacError.hidden = false;
    }

    function showPlan(plan) {
      const planBody = planTable.querySelector("tbody");
      const stayBody = stayTable.querySelector("tbody");
      planBody.innerHTML = "";
      stayBody.innerHTML = "";
      for (const row of plan.migrations) {
        const tr = document.createElement("tr");
        tr.dataset.vm = row.vm_name;
        tr.dataset.destination = row.destination;
        cell(tr, String(row.order));
        cell(tr, row.vm_name);
        cell(tr, interpolate(gettext("%s MiB"), [row.memory_mib]));
        cell(tr, row.destination).dataset.field = "destination";
        cell(tr, String(row.wave));
        reasonsCell(tr, row.reasons);
        planBody.append(tr);
      }
      if (!plan.migrations.length) {
        const tr = document.createElement("tr");
        cell(tr, gettext("No VM can move now: see below why.")).colSpan = 6;
        planBody.append(tr);
      }
      for (const item of plan.unmovable) {
        const tr = document.createElement("tr");
        tr.className = "unmovable";
        tr.dataset.vm = item.vm_name;
        cell(tr, item.vm_name);
        cell(tr, item.state.replace(/_/g, " "));
        reasonsCell(tr, item.reasons);
        stayBody.append(tr);
      }
      planTable.hidden = false;
      stayTable.hidden = stayTitle.hidden = plan.unmovable.length === 0;
      confirm.disabled = plan.migrations.length === 0;
    }

    async function openPlan() {
      evacError.hidden = true;
      loading.hidden = false;
      planTable.hidden = stayTable.hidden = stayTitle.hidden = true;
      confirm.disabled = true;
      dialog.showModal();
      const result = await api("POST", "/api/hosts/" + hostId + "/evacuate/", { dry_run: true });
      loading.hidden = true;
      if (result.status !== 200) { showError(errorText(result)); return; }
      showPlan(result.body);
    }

    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      evacError.hidden = true;
      const bandwidth = document.getElementById("evacuate-bandwidth");
      const bandwidthError = document.getElementById("evacuate-bandwidth-error");
      bandwidthError.hidden = true;
      bandwidth.removeAttribute("aria-invalid");
      const result = await api("POST", "/api/hosts/" + hostId + "/evacuate/", {
        dry_run: false, bandwidth_mib_s: Number(bandwidth.value || 0),
      });
      // Started: the batch's page follows the migrations.
      if (result.status === 202) { location.href = "/migration-batches/" + result.body.batch + "/"; return; }
      const fieldErrors = result.body && result.body.bandwidth_mib_s;
      if (result.status === 400 && Array.isArray(fieldErrors)) {
        bandwidthError.textContent = fieldErrors.join(" ");
        bandwidthError.hidden = false;
        window.Portal.errorTie(bandwidthError, bandwidth, "evacuate-bandwidth-error");
        bandwidth.focus();
      } else {
        showError(errorText(result));
      }
      confirm.disabled = false;
    });

    document.querySelectorAll("[data-action=evacuate]").forEach((b) => b.addEventListener("click", openPlan));
    dialog.querySelectorAll("[data-action=close]").forEach((b) => b.addEventListener("click", () => dialog.close()));
  });
})();
