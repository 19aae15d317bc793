#!/usr/bin/env python3
"""Judge the findings of a testssl.sh run (flat JSON, --severity LOW) against
a file of accepted findings. Prints one line per finding and a total; exits
1 if any finding of severity LOW or above, or any scan problem (WARN,
FATAL), is not accepted, or if the JSON is missing or cut short.

Accepted file: one finding per line, "ID SEVERITY REASON", where ID is
testssl's id (shell wildcards allowed) and SEVERITY the highest severity
accepted for it; '#' starts a comment line."""
import fnmatch
import json
import sys

RANK = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4, "WARN": 5,
        "FATAL": 6}


def load_accepted(path):
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 3 or parts[1] not in RANK:
                sys.exit(f"{path}:{n}: expected 'ID SEVERITY REASON'")
            out.append({"id": parts[0], "severity": parts[1],
                        "reason": parts[2], "used": False})
    return out


def main():
    json_path, accepted_path = sys.argv[1:3]
    accepted = load_accepted(accepted_path)
    try:
        with open(json_path) as f:
            findings = json.load(f)
    except (OSError, ValueError) as e:
        print(f"conformance: no complete testssl result: {e}")
        return 1
    bad = 0
    judged = 0
    for f in findings:
        sev = f.get("severity", "")
        if sev not in RANK:
            continue
        judged += 1
        fid = f.get("id", "")
        text = f.get("finding", "")
        match = next((a for a in accepted if fnmatch.fnmatchcase(fid, a["id"])
                      and RANK[sev] <= RANK[a["severity"]]), None)
        if match:
            match["used"] = True
            print(f"  accepted  {sev:<8} {fid}: {text}\n"
                  f"            because {match['reason']}")
        else:
            bad += 1
            print(f"  NOT OK    {sev:<8} {fid}: {text}")
    for a in accepted:
        if not a["used"]:
            print(f"  (accepted {a['id']} did not occur)")
    print(f"conformance: {judged} findings of severity LOW or above, "
          f"{judged - bad} accepted, {bad} not accepted")
    return 1 if bad else 0


sys.exit(main())
