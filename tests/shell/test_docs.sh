#!/bin/sh
# The man pages and the example config against the key table the parser
# uses (tlsproxy --list-keys), and mandoc's linter. TAP output.
set -u
bin=$1
src=$2
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); fail=1; echo "not ok $n - $1"; }

if out=$(mandoc -Tlint "$src/man/tlsproxy.8" "$src/man/tlsproxy.conf.5" 2>&1) &&
    [ -z "$out" ]; then
	ok "mandoc -Tlint is clean"
else
	notok "mandoc -Tlint: $out"
fi

missing_man=""
missing_conf=""
for key in $("$bin" --list-keys | cut -f2 | sort -u); do
	grep -Eq "^\.(B|BR) $key( |$)" "$src/man/tlsproxy.conf.5" ||
		missing_man="$missing_man $key"
	grep -Eq "^;? ?$key( =| is )" "$src/conf/tlsproxy.conf" ||
		missing_conf="$missing_conf $key"
done
if [ -z "$missing_man" ]; then
	ok "every key is documented in tlsproxy.conf(5)"
else
	notok "keys missing from tlsproxy.conf(5):$missing_man"
fi
if [ -z "$missing_conf" ]; then
	ok "every key appears in the example tlsproxy.conf"
else
	notok "keys missing from conf/tlsproxy.conf:$missing_conf"
fi

# Each key in its own section, with the table's type and default; no
# description of a key the table lacks.
if out=$("$bin" --list-keys | python3 "$src/tests/shell/check_keys.py" \
    "$src/man/tlsproxy.conf.5"); then
	ok "tlsproxy.conf(5) gives every key its section, type and default"
else
	notok "tlsproxy.conf(5) against the key table: $out"
fi

for opt in --list-keys --list-ciphers --list-curves --config --test --version; do
	if grep -q -- "$(echo "$opt" | sed 's/-/\\\\-/g')" "$src/man/tlsproxy.8"; then
		ok "tlsproxy(8) documents $opt"
	else
		notok "tlsproxy(8) does not document $opt"
	fi
done
# The units must pass systemd's own checker; the binary path is this
# build's, and missing man pages (not installed here) are not a finding.
tmp=$(mktemp -d)
sed "s|/usr/sbin/tlsproxy|$bin|g" "$src/systemd/tlsproxy.service" > "$tmp/tlsproxy.service"
cp "$src/systemd/tlsproxy.socket" "$tmp/tlsproxy.socket"
for unit in tlsproxy.service tlsproxy.socket; do
	out=$(systemd-analyze verify "$tmp/$unit" 2>&1 | grep -v "Command 'man ")
	if [ -z "$out" ]; then
		ok "systemd-analyze verify $unit"
	else
		notok "systemd-analyze verify $unit: $out"
	fi
done
rm -rf "$tmp"
echo "1..$n"
exit $fail
