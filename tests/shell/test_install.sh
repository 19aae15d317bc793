#!/bin/sh
# meson install into a DESTDIR puts exactly the expected files in place and
# never writes under /etc. TAP output.
set -u
build=$1
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); fail=1; echo "not ok $n - $1"; }

if meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >/dev/null 2>&1; then
	ok "meson install succeeds"
else
	notok "meson install failed"
fi
prefix=$(meson introspect "$build" --buildoptions |
	python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"][0])')
for f in sbin/tlsproxy bin/tlsproxy-backend share/man/man8/tlsproxy.8 \
    share/man/man5/tlsproxy.conf.5 share/doc/tlsproxy/tlsproxy.conf \
    lib/systemd/system/tlsproxy.service lib/systemd/system/tlsproxy.socket \
    lib/sysusers.d/tlsproxy.conf lib/tmpfiles.d/tlsproxy.conf; do
	if [ -f "$dest$prefix/$f" ]; then
		ok "installs $f"
	else
		notok "does not install $f"
	fi
done
if [ -z "$(find "$dest" -path '*/etc/*' -print -quit)" ]; then
	ok "nothing is installed under etc"
else
	notok "files installed under etc: $(find "$dest" -path '*/etc/*')"
fi
extra=$(cd "$dest$prefix" && find . -type f | sort | grep -v -e '^./sbin/tlsproxy$' \
	-e '^./bin/tlsproxy-backend$' -e '^./share/man/' -e '^./share/doc/tlsproxy/' \
	-e '^./lib/systemd/system/tlsproxy\.' -e '^./lib/sysusers.d/tlsproxy\.conf$' \
	-e '^./lib/tmpfiles.d/tlsproxy\.conf$')
if [ -z "$extra" ]; then
	ok "no unexpected files"
else
	notok "unexpected files: $extra"
fi
echo "1..$n"
exit $fail
