"""Give the migrations recorded before `failure_reason` existed their reason, once.

Until then the reason was only in the error text, and the reports classified it by
the substrings below (first match wins). This is the one place those substrings may
stay: since migration 0004 the engine records the reason itself, and nothing else
reads it from the text (tests/test_architecture.py holds that).

Failed migrations get a reason, and so do those that need attention (the reconciler
keeps that reason when it records them as failed). Other rows stay blank.
"""

from django.db import migrations
from django.db.models import Q

# (reason, condition on `error`), in order: the rules of the reports before 0004.
RULES = [
    ("precheck", Q(error__startswith="Pre-checks failed")),
    ("timeout", Q(error__contains="timed out after")),
    ("worker_lost", Q(error__contains="stopped; ")),
    (
        "unreachable",
        Q(error__contains="did not answer within")
        | Q(error__contains="cannot connect to")
        | Q(error__contains="cannot open ")
        | Q(error__contains="handshake"),
    ),
]
OTHERWISE = "libvirt"
STATUSES = ["failed", "needs_attention"]


def classify(apps, schema_editor):
    Migration = apps.get_model("migrations_app", "Migration")
    unclassified = Migration.objects.filter(status__in=STATUSES, failure_reason="")
    for reason, condition in RULES:
        # A row matched by an earlier rule already has its reason: first match wins.
        unclassified.filter(condition).update(failure_reason=reason)
    unclassified.update(failure_reason=OTHERWISE)


class Migration(migrations.Migration):
    dependencies = [("migrations_app", "0004_failure_reason_and_phase_choices")]

    # Backwards: nothing to undo (0004's reverse drops the column).
    operations = [migrations.RunPython(classify, migrations.RunPython.noop)]
