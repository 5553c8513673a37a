/* The migration page's needs_attention panel: what each host says now (GET
 * /api/migrations/{id}/attention/) and one button per safe resolution, posting to
 * .../resolve/ with the reason typed (host admins only; the API checks it again). */
(function () {
  "use strict";
  const panel = document.getElementById("attention-panel");
  if (!panel) return;
  const id = panel.dataset.migrationId;
  const canResolve = panel.dataset.canResolve === "true";
  const status = panel.querySelector("[data-field=attention-status]");
  const errorBox = panel.querySelector("[data-field=attention-error]");

  function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); }

  function said(report) {
    if (!report.reachable) return "–";
    if (report.state === null) return gettext("no such VM");
    return report.reason ? report.state + " (" + report.reason + ")" : report.state;
  }

  function yesNo(value) { return value === null || value === undefined ? "–" : (value ? gettext("yes") : gettext("no")); }

  function showError(text) { errorBox.textContent = text; errorBox.hidden = !text; }

  function render(body) {
    status.textContent = gettext("Read just now; each action asks the hosts again before it is carried out.");
    const table = document.getElementById("attention-hosts");
    const rows = table.querySelector("tbody");
    rows.textContent = "";
    for (const [side, report] of [[gettext("Source"), body.source], [gettext("Destination"), body.destination]]) {
      const row = document.createElement("tr");
      row.dataset.side = side.toLowerCase();
      cell(row, side); cell(row, report.host);
      cell(row, report.reachable ? gettext("yes") : interpolate(gettext("no: %s"), [report.error]));
      cell(row, said(report)); cell(row, yesNo(report.job_active)); cell(row, yesNo(report.persistent));
      rows.appendChild(row);
    }
    table.hidden = false;
    const list = document.getElementById("attention-choices");
    list.textContent = "";
    for (const choice of body.choices) {
      const item = document.createElement("li");
      item.className = choice.safe ? "check-pass" : "check-skipped";
      item.dataset.choice = choice.action;
      const what = choice.host_actions.length ? interpolate(gettext(" — does: %s"), [choice.host_actions.join(", ")]) : "";
      item.textContent = (choice.safe ? "✔ " : "– ") + choice.label + ": " + choice.why + what;
      list.appendChild(item);
    }
    if (!canResolve) return;
    const form = document.getElementById("attention-form");
    const buttons = document.getElementById("attention-buttons");
    buttons.textContent = "";
    for (const choice of body.choices.filter((c) => c.safe)) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.action = "resolve-" + choice.action;
      button.className = choice.host_actions.length ? "danger" : "";
      button.textContent = choice.label;
      button.addEventListener("click", () => resolve(choice.action, button));
      buttons.appendChild(button);
    }
    form.hidden = false;
  }

  async function resolve(action, button) {
    const reason = document.getElementById("attention-reason").value.trim();
    if (!reason) { showError(gettext("Give a reason first: it is kept in the audit log.")); return; }
    button.disabled = true;
    const result = await window.Portal.api("POST", "/api/migrations/" + id + "/resolve/", { action, reason });
    if (result.status >= 200 && result.status < 300) {
      window.location.reload();
      return;
    }
    button.disabled = false;
    const body = result.body;
    showError(body.detail || Object.entries(body).map(([k, v]) => k + ": " + v).join("; "));
    load();
  }

  async function load() {
    const result = await window.Portal.api("GET", "/api/migrations/" + id + "/attention/");
    if (result.status === 200) render(result.body);
    else status.textContent = result.body.detail || gettext(gettext("The hosts could not be asked."));
  }

  load();
})();
