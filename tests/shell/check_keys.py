#!/usr/bin/env python3
"""Checks tlsproxy.conf(5) against the key table (tlsproxy --list-keys on
stdin): every key is described in its own section with the table's type
and default, and the page describes no key the table lacks. Prints one
problem per line; exits 1 if there is any."""
import re
import sys

SECTIONS = ("global", "listener", "backend", "context", "acme")


def plain(lines):
    """Text of roff lines, fonts dropped: ".BR 64k ." gives "64k."."""
    out = []
    for line in lines:
        if line.startswith("."):
            macro, _, rest = line.partition(" ")
            if macro in (".B", ".I"):
                out.append(rest.strip('"'))
            elif macro in (".BR", ".RB", ".IR", ".RI", ".BI", ".IB"):
                out.append("".join(w.strip('"') for w in rest.split()))
            continue
        out.append(line)
    return re.sub(r"\s+", " ", " ".join(out).replace("\\-", "-")).strip()


def entries(man):
    """{(section, key): text} for every ".TP / .B key" entry of the
    SECTIONS AND KEYS part, plus the text of TLS SETTINGS."""
    found, section, key, body, tls = {}, None, None, [], []
    in_tls = False

    def close():
        if section and key:
            found[(section, key)] = plain(body)

    lines = man.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(".SS ") or line.startswith(".SH "):
            close()
            key, body = None, []
            m = re.match(r"\.SS \[(\w+)", line)
            section = m.group(1) if m and m.group(1) in SECTIONS else None
            in_tls = line == ".SH TLS SETTINGS"
            continue
        if in_tls:
            tls.append(line)
        if line in (".TP", ".PP"):
            close()
            key, body = None, []
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if line == ".TP" and re.match(r"\.B [a-z_0-9]+$", nxt):
                key = nxt.split()[1]
            continue
        if key and line != ".B " + key:
            body.append(line)
    close()
    return found, plain(tls)


def main():
    man = open(sys.argv[1]).read()
    found, tls = entries(man)
    problems = []
    table = set()
    for row in sys.stdin.read().splitlines():
        sec, key, typ, default = row.split("\t")[:4]
        table.add((sec, key))
        if default == "(from [global])":
            if ("global", key) not in found:
                problems.append("%s: not described in [global]" % key)
            if key not in tls:
                problems.append("[%s] %s: not listed under TLS SETTINGS"
                                % (sec, key))
            continue
        text = found.get((sec, key))
        if text is None:
            problems.append("[%s] %s: not described in its section"
                            % (sec, key))
            continue
        want_type = typ.replace("|", " or ")
        m = re.search(r"Type: ([^.]*)\.", text)
        if not m or not m.group(1).startswith(want_type):
            problems.append("[%s] %s: type should be '%s', page says '%s'"
                            % (sec, key, want_type,
                               m.group(1) if m else "nothing"))
        m = re.search(r"Default: (.*)", text)
        said = m.group(1) if m else ""
        if default == "(required)":
            ok = "Required." in text
        elif default == "(from [listener])":
            ok = "listener" in said.split(".")[0]
        elif default == "-":
            ok = m is None or not re.match(r"[0-9]|yes|no\b", said)
        else:
            # "no" must not pass for "none (the listener's setting)".
            ok = re.match(re.escape(default) + r"(?![\w-])", said) is not None
        if not ok:
            problems.append("[%s] %s: default should be '%s', page says "
                            "'%s'" % (sec, key, default,
                                      said[:60] if m else "nothing"))
    for sec, key in sorted(found):
        if (sec, key) not in table:
            problems.append("[%s] %s: described, but no such key"
                            % (sec, key))
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
