#!/usr/bin/env python3
"""Checks a Prometheus text exposition (version 0.0.4) read from stdin:
every line is a valid comment, HELP, TYPE or sample; a family's TYPE comes
before its samples and only once; a family's samples are together;
histogram buckets are cumulative and end with +Inf equal to _count.
Prints "ok N" (N samples) or the first problem, and exits 0 or 1."""
import re
import sys

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|NaN|Inf)"
SAMPLE = re.compile(r"^(%s)(\{%s(?:,%s)*\})? (%s)$" % (NAME, LABEL, LABEL,
                                                      VALUE))
HELP = re.compile(r"^# HELP (%s) .*$" % NAME)
TYPE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$"
                  % NAME)


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[:-len(suffix)]
        if name.endswith(suffix) and types.get(base) == "histogram":
            return base
    return name


def main():
    types, done, current, samples = {}, set(), None, 0
    buckets = {}
    for n, line in enumerate(sys.stdin.read().split("\n"), 1):
        if line == "":
            continue
        if HELP.match(line):
            continue
        m = TYPE.match(line)
        if m:
            if m.group(1) in types:
                return "line %d: second TYPE for %s" % (n, m.group(1))
            types[m.group(1)] = m.group(2)
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            return "line %d: not a valid sample: %r" % (n, line)
        fam = family_of(m.group(1), types)
        if fam not in types:
            return "line %d: %s has no TYPE before it" % (n, fam)
        if fam != current:
            if fam in done:
                return "line %d: samples of %s are not together" % (n, fam)
            if current is not None:
                done.add(current)
            current = fam
        if m.group(1).endswith("_bucket"):
            v = float(m.group(3))
            if v < buckets.get(fam, 0):
                return "line %d: %s buckets are not cumulative" % (n, fam)
            buckets[fam] = v
        if m.group(1).endswith("_count") and fam in buckets and \
                float(m.group(3)) != buckets[fam]:
            return "line %d: %s_count differs from the +Inf bucket" % (n,
                                                                       fam)
        samples += 1
    print("ok", samples)
    return None


if __name__ == "__main__":
    problem = main()
    if problem:
        print(problem)
        sys.exit(1)
