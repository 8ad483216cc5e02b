#!/usr/bin/env python3
"""Checks pixguard's alert rules against a live /metrics, for tests/monitoring.rs.

    alert_rules.py RULES.yaml PLAIN.rules.yml RUNBOOK.md METRICS.txt [METRICS.txt ...]

- RULES.yaml (the GKE Rules resource) and PLAIN.rules.yml (plain Prometheus) hold the same groups;
- every expression parses as PromQL (promql-parser, the Rust parser GreptimeDB uses) and every
  `for` as a duration;
- every metric an expression selects is exported in one of the METRICS.txt files (Prometheus text
  exposition scraped from running servers), and every label it matches on appears on that metric
  where it has samples;
- every rule has a severity and a runbook link to a heading of RUNBOOK.md;
- every METRICS.txt is valid text exposition as Prometheus' own Python client parses it
  (`prometheus_client.parser`, the reference parser): each family once, typed and documented, each
  histogram series with a `+Inf` bucket equal to its `_count` and cumulative buckets, no negative
  counter — a scrape that Managed Prometheus would refuse or misread fails here, not on GKE.

Prints one line per rule; exits 1 with every problem found.
"""
from __future__ import annotations

import re
import sys

import collections
import math

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported(paths: list[str]) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Metric name → type (from # TYPE), and series name → label names seen on its samples."""
    kinds: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    sample = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ")
    for path in paths:
        for line in open(path, encoding="utf-8"):
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(maxsplit=3)
                kinds[name] = kind.strip()
                continue
            m = sample.match(line)
            if m:
                names = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
                labels.setdefault(m.group(1), set()).update(names)
    return kinds, labels


def exposition_problems(path: str) -> list[str]:
    """What the reference parser refuses in a scraped exposition, or finds inconsistent."""
    try:
        families = list(text_string_to_metric_families(open(path, encoding="utf-8").read()))
    except ValueError as e:
        return [f"{path}: does not parse as text exposition: {e}"]
    problems = []
    seen = collections.Counter(f.name for f in families)
    problems += [f"{path}: family {n} appears {c} times" for n, c in seen.items() if c > 1]
    for f in families:
        if f.type in ("unknown", "untyped"):
            problems.append(f"{path}: {f.name} has no TYPE")
        if not f.documentation:
            problems.append(f"{path}: {f.name} has no HELP")
        if f.type == "counter":
            problems += [f"{path}: {s.name} {s.labels} is negative" for s in f.samples if s.value < 0]
        if f.type != "histogram":
            continue
        series: dict = collections.defaultdict(dict)
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            part = float(s.labels["le"]) if s.name.endswith("_bucket") else s.name[len(f.name):]
            series[key][part] = s.value
        for key, values in series.items():
            bounds = sorted(k for k in values if isinstance(k, float))
            counts = [values[b] for b in bounds]
            where = f"{path}: {f.name}{dict(key)}"
            if not bounds or bounds[-1] != math.inf:
                problems.append(f"{where}: no +Inf bucket")
                continue
            if any(b < a for a, b in zip(counts, counts[1:])):
                problems.append(f"{where}: buckets not cumulative {counts}")
            if values.get("_count") != counts[-1]:
                problems.append(f"{where}: _count {values.get('_count')} is not the +Inf bucket {counts[-1]}")
    return problems


def selectors(node) -> list:
    """Every vector selector in an expression."""
    if isinstance(node, promql_parser.VectorSelector):
        return [node]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    found = []
    for attr in ("lhs", "rhs", "expr", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            found += selectors(child)
    for arg in getattr(node, "args", None) or []:
        found += selectors(arg)
    return found


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", text).replace(" ", "-"))
    return out


def main() -> int:
    rules_path, plain_path, runbook_path, *metrics_paths = sys.argv[1:]
    problems: list[str] = []
    resource = yaml.safe_load(open(rules_path, encoding="utf-8"))
    plain = yaml.safe_load(open(plain_path, encoding="utf-8"))
    if resource.get("apiVersion") != "monitoring.googleapis.com/v1" or resource.get("kind") != "Rules":
        problems.append(f"{rules_path}: not a monitoring.googleapis.com/v1 Rules resource")
    if resource.get("spec") != plain:
        problems.append(f"{plain_path} differs from the spec of {rules_path}")
    kinds, labels = exported(metrics_paths)
    for path in metrics_paths:
        problems += exposition_problems(path)
    headings = anchors(open(runbook_path, encoding="utf-8").read())
    count = 0
    for group in resource["spec"]["groups"]:
        promql_parser.parse_duration(group.get("interval", "1m"))
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            count += 1
            try:
                expr = promql_parser.parse(rule["expr"])
            except Exception as e:  # the parser raises plain exceptions with its message
                problems.append(f"{name}: expression does not parse: {e}")
                continue
            if "for" in rule:
                promql_parser.parse_duration(rule["for"])
            used = []
            for vs in selectors(expr):
                metric = vs.name
                base = metric
                if metric not in kinds and metric.endswith(HISTOGRAM_SUFFIXES):
                    base = metric.rsplit("_", 1)[0]
                if base not in kinds:
                    problems.append(f"{name}: {metric} is not in any live /metrics")
                    continue
                for m in vs.matchers.matchers:
                    seen = labels.get(metric)
                    if seen is not None and m.name not in seen:
                        problems.append(f"{name}: {metric} has no label {m.name} (its labels: {sorted(seen)})")
                used.append(metric)
            if not used:
                problems.append(f"{name}: selects no metric")
            severity = rule.get("labels", {}).get("severity")
            if severity not in ("info", "warning", "critical"):
                problems.append(f"{name}: severity {severity!r} is not info, warning or critical")
            runbook = rule.get("annotations", {}).get("runbook", "")
            anchor = runbook.partition("#")[2]
            if not runbook.startswith("docs/monitoring.md#") or anchor not in headings:
                problems.append(f"{name}: runbook {runbook!r} names no heading of {runbook_path}")
            print(f"{name}: parses; selects {', '.join(sorted(set(used)))}; severity {severity}; runbook #{anchor}")
    for p in problems:
        print("PROBLEM:", p)
    print(f"{count} rules, {len(problems)} problems")
    return 1 if problems or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
