"""What every page's template gets besides Django's own."""

from __future__ import annotations

from django.http import HttpRequest

from migrations_app.domain.lifecycle import FINAL_STATUSES, FailureReason, MigrationStatus, Phase


def _labels(choices: list[tuple[str, str]]) -> dict[str, str]:
    # The labels are lazy translations: made into text in the request's language.
    return {value: str(label) for value, label in choices}


def vocabulary(request: HttpRequest) -> dict:
    """The lifecycle's words for static/portal/portal.js (via base.html's json_script)."""
    return {
        "portal_vocabulary": {
            "status_labels": _labels(MigrationStatus.choices),
            "final_statuses": [str(status) for status in FINAL_STATUSES],
            "phase_labels": _labels(Phase.choices),
            "failure_reason_labels": _labels(FailureReason.choices),
        }
    }
