"""A validation finding (path, line, rule id, message) and the result of validating one change set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The checks, in the order they are reported (a result always lists every one of them).
CHECKS = ("paths", "size", "syntax", "security", "imports", "type_hints", "complexity", "tenant_isolation")


@dataclass(frozen=True)
class Finding:
    """One reason a change set is rejected."""

    check: str  # one of CHECKS
    path: str
    line: int
    rule: str  # stable id, e.g. path.vcs, py.import, py.toplevel, bandit.B602
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "path": self.path, "line": self.line, "rule": self.rule,
                "message": self.message}


@dataclass
class ValidationResult:
    """ok only when there is no finding; `checks` keeps the per-check view ({name: {ok, errors}})."""

    ok: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, findings: list[Finding], files: list[str]) -> ValidationResult:
        ordered = sorted(findings, key=lambda f: (CHECKS.index(f.check), f.path, f.line, f.rule))
        errors: dict[str, list[str]] = {c: [] for c in CHECKS}
        for f in ordered:
            errors[f.check].append(str(f))
        checks: dict[str, dict[str, Any]] = {c: {"ok": not e, "errors": e} for c, e in errors.items()}
        return cls(not ordered, checks, ordered, sorted(files))

    def errors(self) -> list[str]:
        return [f"{f.check}: {f}" for f in self.findings]

    def summary(self, limit: int = 800) -> str:
        """One line for an event reason: how many findings in which checks, then as many as fit."""
        failed = [c for c in CHECKS if not self.checks[c]["ok"]]
        head = f"{len(self.findings)} finding(s) in {', '.join(failed)}: "
        return (head + "; ".join(self.errors()))[:limit]

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": self.checks, "findings": [f.as_dict() for f in self.findings],
                "files": self.files}
