"""``marmot automation lint FILE...``: likely mistakes in automation files.

The daemon checks the files against its event log (names and labels never
seen, with the closest ones; ``for_each`` labels the events never carry)
and its settings (Resolved states); without a daemon, only the checks on
the files themselves run. ``automation create`` and ``update`` run the same
checks and print warnings, which ``--strict`` turns into errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from marmot.cli.connect import connect
from marmot.cli.output import json_lines, line, table
from marmot.deployments import is_prefect_yaml
from marmot.documents import document_entries, load_automations, read_documents
from marmot.engine.errors import DaemonUnavailable, ValidationFailed
from marmot.engine.models.lint import LintReport
from marmot.engine.triggers.lint import lint_automation, proactive_floor
from marmot.transport.client import Client

__all__ = ["raw_automations", "register", "warn_before_write"]

_err = Console(stderr=True, highlight=False)

# Documents linted per request (the daemon takes at most 100).
LINT_PART = 100


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lint`` to the ``automation`` group."""
    lint = sub.add_parser(
        "lint",
        parents=[common],
        help="check automation files for likely mistakes (loops, typos, dead labels)",
    )
    lint.add_argument("files", nargs="+", metavar="FILE", help="automation YAML or JSON files")
    lint.add_argument("--strict", action="store_true", help="findings are errors (exit 2)")
    lint.add_argument("--json", action="store_true")
    lint.set_defaults(handler=run_lint)


def raw_automations(path: str | Path) -> list[dict[str, Any]]:
    """The automation documents of a file as written (after ``load_automations``
    has accepted it), in the same order."""
    found: list[dict[str, Any]] = []
    for data, node in read_documents(Path(path)):
        if data is None:
            continue
        for document, _, _ in document_entries(data, node, "automations", "trigger"):
            if isinstance(document, dict):
                found.append(document)
    return found


def _documents(paths: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in paths:
        load_automations(path)  # a file that does not load fails here, with its line
        documents += [(path, d) for d in raw_automations(path)]
    return documents


def _offline(documents: Sequence[dict[str, Any]]) -> list[LintReport]:
    # Imported here: Jinja is only needed when there is no daemon to ask, and every
    # `marmot automation` verb builds its parser from this module.
    from marmot.engine.templates.checks import validated_automation

    reports = []
    for document in documents:
        automation = validated_automation(document)
        findings = proactive_floor(document) + lint_automation(automation)
        reports.append(LintReport(automation=automation.name, findings=findings, log_checked=False))
    return reports


def _lint(client: Client, documents: Sequence[dict[str, Any]]) -> list[LintReport]:
    """The daemon's reports on any number of documents (sent in parts)."""
    return [
        report
        for start in range(0, len(documents), LINT_PART)
        for report in client.lint_automations(documents[start : start + LINT_PART])
    ]


def run_lint(args: argparse.Namespace) -> int:
    documents = _documents(args.files)
    raw = [d for _, d in documents]
    try:
        with connect(args) as client:
            reports = _lint(client, raw)
    except DaemonUnavailable as exc:
        _err.print(f"[yellow]note:[/] {escape(str(exc))}: only the checks on the files ran")
        reports = _offline(raw)
    if args.json:
        json_lines(
            {"file": path, **report.model_dump(mode="json")}
            for (path, _), report in zip(documents, reports, strict=True)
        )
    else:
        _print(documents, reports)
    count = sum(len(r.findings) for r in reports)
    if count and args.strict:
        raise ValidationFailed(f"{count} lint finding(s) (--strict)")
    return 0


def _print(documents: Sequence[tuple[str, dict[str, Any]]], reports: Sequence[LintReport]) -> None:
    rows = [
        [path, report.automation, f.path, f.check.value, f.message, ", ".join(f.suggestions)]
        for (path, _), report in zip(documents, reports, strict=True)
        for f in report.findings
    ]
    checked = reports[0].log_checked if reports else False
    days = reports[0].log_days if reports else None
    scope = f"against the last {days:g} day(s) of events" if checked and days else "files only"
    if not rows:
        line(f"{len(reports)} automation(s): no finding ({scope})")
        return
    table(
        f"{len(rows)} finding(s) in {len(reports)} automation(s) ({scope})",
        ["file", "automation", "where", "check", "finding", "did you mean"],
        rows,
    )


def warn_before_write(client: Client, paths: Sequence[str], strict: bool) -> None:
    """Lint the automation files about to be created or updated: warnings on stderr,
    or (``strict``) ``ValidationFailed`` when there is any finding."""
    documents = [(p, d) for p in paths if not is_prefect_yaml(p) for d in raw_automations(p)]
    if not documents:
        return
    reports = _lint(client, [d for _, d in documents])
    findings = [(report.automation, f) for report in reports for f in report.findings]
    for name, finding in findings:
        hint = f" (did you mean {', '.join(finding.suggestions)}?)" if finding.suggestions else ""
        _err.print(
            f"[yellow]warning:[/] {escape(name)}: {escape(finding.path)}: "
            f"{escape(finding.message)}{escape(hint)}",
            soft_wrap=True,
        )
    if findings and strict:
        sys.stderr.flush()
        raise ValidationFailed(f"{len(findings)} lint finding(s): nothing written (--strict)")
