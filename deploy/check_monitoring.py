"""Offline checks of deploy/monitoring/ (run by deploy/validate.sh).

Usage: check_monitoring.py RULES_OUT

1. The ServiceMonitor and the PrometheusRule against the prometheus-operator's
   monitoring.coreos.com/v1 schema: the pydantic models of the PyPI package
   cloudcoil-models-prometheus-operator, generated from the operator's CRDs. A model
   refuses a wrong type, a value outside an enum or a missing required field; a field the
   schema does not know is dropped by the model, so the document is also compared with
   the model's dump of it, and every field that did not survive is an error (the API
   server's structural pruning, or kubectl's strict field validation, would drop or
   refuse it the same way).
2. Every section a runbook annotation names exists as a heading in docs/operations.md.
3. Writes the PrometheusRule's .spec to RULES_OUT as a plain rule file for promtool:
   the PrometheusRule stays the only copy of the rules.
"""

import re
import sys
from pathlib import Path

import yaml
from cloudcoil.models.prometheus_operator import v1

MONITORING = Path("deploy/monitoring")
MODELS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): v1.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): v1.PrometheusRule,
}


def lost_fields(given, kept, path=""):
    """The paths of `given` that are missing or different in `kept`."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path or "/"]
        lost = []
        for key, value in given.items():
            if key not in kept:
                lost.append(f"{path}/{key}")
            else:
                lost.extend(lost_fields(value, kept[key], f"{path}/{key}"))
        return lost
    if isinstance(given, list):
        if not isinstance(kept, list) or len(kept) != len(given):
            return [path]
        lost = []
        for i, (a, b) in enumerate(zip(given, kept)):
            lost.extend(lost_fields(a, b, f"{path}/{i}"))
        return lost
    return [] if given == kept else [path]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rules_out = Path(sys.argv[1])
    errors = []
    rules = []
    for path in sorted(MONITORING.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            model = MODELS.get((doc.get("apiVersion"), doc.get("kind")))
            if model is None:
                continue  # a Service, a promtool test file: checked elsewhere
            try:
                parsed = model.model_validate(doc)
            except Exception as e:  # pydantic.ValidationError, with every field
                errors.append(f"{path}: {doc['kind']} does not match the schema:\n{e}")
                continue
            dumped = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
            lost = lost_fields(doc, dumped)
            for field in lost:
                errors.append(f"{path}: {doc['kind']}: {field} is not in the schema")
            if not lost:
                print(f"{path}: {doc['kind']} {doc['metadata']['name']} matches monitoring.coreos.com/v1")
            if doc["kind"] == "PrometheusRule":
                rules.append((path, doc))

    headings = {
        re.sub(r"[`*]", "", line.lstrip("#").strip())
        for line in Path("docs/operations.md").read_text().splitlines()
        if line.startswith("#")
    }
    for path, doc in rules:
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                runbook = rule.get("annotations", {}).get("runbook")
                if "alert" in rule and not runbook:
                    errors.append(f"{path}: {rule['alert']} has no runbook annotation")
                for section in re.findall(r'"([^"]+)"', runbook or ""):
                    if section not in headings:
                        errors.append(
                            f"{path}: {rule['alert']}: no section \"{section}\" in docs/operations.md"
                        )

    if len(rules) != 1:
        errors.append(f"expected one PrometheusRule under {MONITORING}, found {len(rules)}")
    if errors:
        sys.exit("\n".join(errors))
    rules_out.parent.mkdir(parents=True, exist_ok=True)
    rules_out.write_text(yaml.safe_dump(rules[0][1]["spec"], sort_keys=False))
    print(f"rules of {rules[0][0]} written to {rules_out}")


if __name__ == "__main__":
    main()
