"""What every page's template gets besides Django's own."""

from __future__ import annotations

from django.http import HttpRequest

from migrations_app.domain.lifecycle import FINAL_STATUSES, FailureReason, MigrationStatus, Phase

# The lifecycle's words for static/portal/portal.js (via base.html's json_script).
VOCABULARY = {
    "status_labels": dict(MigrationStatus.choices),
    "final_statuses": [str(status) for status in FINAL_STATUSES],
    "phase_labels": dict(Phase.choices),
    "failure_reason_labels": dict(FailureReason.choices),
}


def vocabulary(request: HttpRequest) -> dict:
    return {"portal_vocabulary": VOCABULARY}
