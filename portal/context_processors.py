"""What every page's template gets besides Django's own."""

from __future__ import annotations

from django.http import HttpRequest

from migrations_app.domain.lifecycle import FINAL_STATUSES, FailureReason, MigrationStatus, Phase

# The lifecycle's words for the browser: base.html writes them into every page with
# json_script and static/portal/portal.js reads them from there, so that the labels
# exist once, in migrations_app.domain.lifecycle.
VOCABULARY = {
    "status_labels": dict(MigrationStatus.choices),
    "final_statuses": [str(status) for status in FINAL_STATUSES],
    "phase_labels": dict(Phase.choices),
    "failure_reason_labels": dict(FailureReason.choices),
}


def vocabulary(request: HttpRequest) -> dict:
    return {"portal_vocabulary": VOCABULARY}
