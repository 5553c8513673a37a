"""Pre-checks: can this migration work? They run for `migrate/check/` and again in the
worker right before libvirt (things change while a migration waits)."""

from __future__ import annotations

from dataclasses import dataclass

from migrations_app.prechecks.facts import Facts, MigrationPlan, Unreachable, facts_gather
from migrations_app.prechecks.rules import (
    RULES,
    CheckName,
    CheckStatus,
    Verdict,
    destination_clash,
    needs_met,
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: CheckStatus
    message: str

    @property
    def failed(self) -> bool:
        return self.status == CheckStatus.FAIL

    def as_dict(self) -> dict:
        return {"name": self.name, "status": str(self.status), "message": self.message}


@dataclass(frozen=True)
class EngineFacts:
    """What the checks learned that the engine needs later; not shown to users."""

    destination_had_definition: bool  # a shut-off definition of this VM, reused
    source_state: str  # the VM's state on the source ("" when not known)
    # The source answered without the VM, or with it transient where the inventory had
    # it defined: changed outside the portal, so the inventory is read again.
    changed_outside: bool = False

    @property
    def source_was_paused(self) -> bool:
        return self.source_state == "paused"


@dataclass(frozen=True)
class Prechecks:
    results: list[CheckResult]  # one per CheckName, in its order
    engine_facts: EngineFacts

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.results if c.failed]


def run_prechecks(plan: MigrationPlan) -> Prechecks:
    return judge(facts_gather(plan))


def judge(facts: Facts) -> Prechecks:
    met = needs_met(facts)
    verdicts = {name: rule.judge(facts) for name, rule in RULES.items() if rule.needs in met}
    skipped = Verdict(CheckStatus.SKIPPED, _skip_reason(verdicts))
    results = []
    for name in RULES:
        verdict = verdicts.get(name, skipped)
        results.append(CheckResult(name.value, verdict.status, verdict.message))
    clash = destination_clash(facts)
    return Prechecks(
        results=results,
        engine_facts=EngineFacts(
            destination_had_definition=bool(clash and clash.coming_home),
            source_state=facts.vm.state if facts.vm else "",
            changed_outside=_changed_outside(facts),
        ),
    )


def _changed_outside(facts: Facts) -> bool:
    if isinstance(facts.source, Unreachable):
        return False
    vm = facts.vm
    return vm is None or (not vm.persistent and bool(facts.inventory_persistent))


def checks_skipped(reason: str) -> list[CheckResult]:
    """Every pre-check, none run: `reason` says why."""
    return [CheckResult(name.value, CheckStatus.SKIPPED, reason) for name in CheckName]


def _skip_reason(verdicts: dict[CheckName, Verdict]) -> str:
    """Why a rule that lacked a fact was not checked: the first host that failed."""
    for prerequisite in (CheckName.SOURCE_REACHABLE, CheckName.DESTINATION_REACHABLE):
        if verdicts[prerequisite].status == CheckStatus.FAIL:
            return f"not checked: {prerequisite.replace('_', ' ')} failed"
    return "not checked"
