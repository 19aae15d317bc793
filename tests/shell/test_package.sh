#!/bin/sh
# Checks a built tlsproxy .deb: lintian; the files, conffiles, modes and
# owners; the maintainer scripts (run against stand-in commands: nothing is
# enabled, started, stopped or restarted except on removal); the sysusers
# and tmpfiles entries applied to the unpacked tree; the units through
# systemd-analyze verify; the example configuration through the packaged
# binary's -t; and the logrotate file against the packaged daemon.
# TAP output. Usage: test_package.sh PACKAGE.deb
set -u
deb=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); fail=1; echo "not ok $n - $1"; }
# check DESC CMD...: one case, passed when CMD succeeds; its output is
# shown as TAP comments when it fails.
check() {
	desc=$1
	shift
	if "$@" > "$tmp/out" 2>&1; then
		ok "$desc"
	else
		notok "$desc"
		sed 's/^/# /' "$tmp/out"
	fi
}
# same FILE TEXT: FILE holds exactly TEXT (and a final newline).
same() {
	printf '%s\n' "$2" > "$tmp/want"
	diff -u "$tmp/want" "$1"
}

root=$tmp/root
bin=$root/usr/sbin/tlsproxy
mkdir -p "$root" "$tmp/control"
check "dpkg-deb unpacks the package" sh -c \
    "dpkg-deb -x '$deb' '$root' && dpkg-deb -e '$deb' '$tmp/control'"

# --- lintian ---------------------------------------------------------------
# Tags of severity info and below are shown, not failed on.
if command -v lintian > /dev/null; then
	check "lintian: no errors or warnings" lintian --fail-on error,warning "$deb"
	sed -e '/^running with root privileges/d' -e 's/^/# /' "$tmp/out"
else
	notok "lintian is not installed"
fi

# --- files, conffiles, modes and owners ------------------------------------
check "the package holds exactly the expected files" same /dev/stdin "\
./etc/logrotate.d/tlsproxy
./etc/tlsproxy/tlsproxy.conf
./lib/systemd/system/tlsproxy.service
./lib/systemd/system/tlsproxy.socket
./usr/lib/sysusers.d/tlsproxy.conf
./usr/lib/tmpfiles.d/tlsproxy.conf
./usr/sbin/tlsproxy
./usr/share/doc/tlsproxy/changelog.gz
./usr/share/doc/tlsproxy/copyright
./usr/share/doc/tlsproxy/tlsproxy.conf.gz
./usr/share/lintian/overrides/tlsproxy
./usr/share/man/man5/tlsproxy.conf.5.gz
./usr/share/man/man8/tlsproxy.8.gz" <<EOF
$(cd "$root" && find . ! -type d | LC_ALL=C sort)
EOF
check "conffiles: the configuration and the logrotate file" \
    same "$tmp/control/conffiles" "\
/etc/logrotate.d/tlsproxy
/etc/tlsproxy/tlsproxy.conf"
check "/etc/tlsproxy/tlsproxy.conf is conf/tlsproxy.conf" \
    cmp "$root/etc/tlsproxy/tlsproxy.conf" "$src/conf/tlsproxy.conf"
# dpkg-deb -c lists mode, owner/group, size, date, time, name.
dpkg-deb -c "$deb" > "$tmp/list"
check "every entry is owned by root:root" \
    awk '$2 != "root/root" { print; bad = 1 } END { exit bad }' "$tmp/list"
check "directories are 0755, the daemon 0755, other files 0644" awk '
	/^d/ { if ($1 != "drwxr-xr-x") { print; bad = 1 }; next }
	$6 == "./usr/sbin/tlsproxy" { if ($1 != "-rwxr-xr-x") { print; bad = 1 }; next }
	{ if ($1 != "-rw-r--r--") { print; bad = 1 } }
	END { exit bad }' "$tmp/list"

# --- no TLS library but the static BoringSSL ---------------------------------
dpkg-deb -f "$deb" Depends > "$tmp/depends"
check "Depends names no TLS library" sh -c \
    "cat '$tmp/depends'; ! grep -E -i 'ssl|crypto|gnutls|boring' '$tmp/depends'"
check "the daemon links no libssl or libcrypto" sh -c \
    "ldd '$bin' && ! ldd '$bin' | grep -E 'libssl|libcrypto'"
version=$(dpkg-deb -f "$deb" Version | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//')
"$bin" -V > "$tmp/V" 2>&1
check "tlsproxy -V prints the package's version $version" \
    grep -q -x "tlsproxy $version" "$tmp/V"
# shellcheck source=../../scripts/boringssl.pin
. "$src/scripts/boringssl.pin"
check "tlsproxy -V names the pinned BoringSSL, static" \
    grep -q "BoringSSL $BORINGSSL_VERSION .*; static\$" "$tmp/V"

# --- maintainer scripts ------------------------------------------------------
# The scripts run with stand-ins for the commands they call, which only
# log their arguments, and with a directory of ours in place of
# /run/systemd/system, so that they act as on a machine running systemd.
stubs=$tmp/stubs
mkdir -p "$stubs" "$tmp/running" "$tmp/scripts"
for c in systemctl deb-systemd-invoke deb-systemd-helper systemd-sysusers \
    systemd-tmpfiles; do
	cat > "$stubs/$c" <<EOF
#!/bin/sh
echo "$c \$*" >> "$tmp/calls"
# deb-systemd-helper: the unit was installed before (STUB_INSTALLED=yes)
# and never enabled by the operator.
case "$c \$*" in
"deb-systemd-helper debian-installed "*) [ "\${STUB_INSTALLED:-}" = yes ] ;;
"deb-systemd-helper "*was-enabled*) exit 1 ;;
esac
EOF
	chmod 755 "$stubs/$c"
done
for s in preinst postinst prerm postrm; do
	[ -f "$tmp/control/$s" ] || continue
	sed -e "s|/run/systemd/system|$tmp/running|g" -e "s|/var/|$tmp/var/|g" \
	    "$tmp/control/$s" > "$tmp/scripts/$s"
done
# maint SCRIPT ARGS...: runs a maintainer script; the calls it made are in
# $tmp/calls.
maint() {
	: > "$tmp/calls"
	s=$1
	shift
	[ -f "$tmp/scripts/$s" ] || return 0
	PATH=$stubs:$PATH sh -e "$tmp/scripts/$s" "$@"
}
# nothing_started: no unit was started, restarted, stopped or enabled.
nothing_started() {
	cat "$tmp/calls"
	! grep -E '^(systemctl|deb-systemd-invoke) .*(start|stop|enable)|^deb-systemd-helper enable' \
	    "$tmp/calls"
}
check "no preinst stops the service" sh -c \
    "[ ! -f '$tmp/control/preinst' ] || ! grep -E 'stop' '$tmp/control/preinst'"
maint postinst configure
check "install: the user and /etc/tlsproxy are made" sh -c "cat '$tmp/calls';
    grep -q -x 'systemd-sysusers tlsproxy.conf' '$tmp/calls' &&
    grep -q -x 'systemd-tmpfiles --create tlsproxy.conf' '$tmp/calls'"
check "install: the service is neither enabled nor started" nothing_started
STUB_INSTALLED=yes maint postinst configure 0.0.1
check "upgrade: postinst leaves a running service alone" nothing_started
maint prerm upgrade 99
check "upgrade: prerm leaves a running service alone" nothing_started
maint postrm upgrade 99
check "upgrade: postrm leaves a running service alone" nothing_started
maint prerm remove
check "remove: prerm stops the socket and the service" sh -c "cat '$tmp/calls';
    grep -q -x 'deb-systemd-invoke stop tlsproxy.socket tlsproxy.service' '$tmp/calls'"
mkdir -p "$tmp/var/lib/tlsproxy/acme" "$tmp/var/cache/tlsproxy/ocsp" \
    "$tmp/var/log/tlsproxy"
maint postrm purge
check "purge: state, cache and logs are removed" sh -c "
    [ ! -e '$tmp/var/lib/tlsproxy' ] && [ ! -e '$tmp/var/cache/tlsproxy' ] &&
    [ ! -e '$tmp/var/log/tlsproxy' ]"

# --- install, upgrade, remove, purge with dpkg -------------------------------
# dpkg itself, into an empty root of ours: --force-script-chrootless runs
# the real maintainer scripts here with DPKG_ROOT set, which they and the
# tools they call (systemd-sysusers, systemd-tmpfiles, deb-systemd-helper)
# honour; the steps that talk to a running systemd skip themselves under
# DPKG_ROOT and were checked above. Dependencies are not installed there.
dr=$tmp/dpkgroot
dpkg_root() {
	dpkg --root="$dr" --force-script-chrootless --force-depends \
	    --force-confdef --force-confold "$@" < /dev/null
}
if [ "$(id -u)" -eq 0 ]; then
	mkdir -p "$dr/var/lib/dpkg/info" "$dr/var/lib/dpkg/updates" \
	    "$dr/var/lib/dpkg/triggers"
	: > "$dr/var/lib/dpkg/status"
	: > "$dr/var/lib/dpkg/available"
	check "dpkg installs the package" dpkg_root -i "$deb"
	check "install: the user exists and /etc/tlsproxy is 0750 root:tlsproxy" sh -c "
	    g=\$(sed -n 's/^tlsproxy:[^:]*:\\([0-9]*\\):.*/\\1/p' '$dr/etc/group');
	    grep -q '^tlsproxy:' '$dr/etc/passwd' && [ -n \"\$g\" ] &&
	    stat -c '%a %u %g' '$dr/etc/tlsproxy' | grep -q -x \"750 0 \$g\""
	check "install: no unit is enabled" sh -c "
	    find '$dr/etc' -name '*.wants' -o -type l | grep . && exit 1; exit 0"
	# An operator's edit, then a newer version of the same package.
	echo "; local edit" >> "$dr/etc/tlsproxy/tlsproxy.conf"
	mkdir -p "$tmp/next"
	dpkg-deb -R "$deb" "$tmp/next/tree"
	sed -i "s/^Version: .*/Version: $version+1/" "$tmp/next/tree/DEBIAN/control"
	dpkg-deb --root-owner-group -b "$tmp/next/tree" "$tmp/next/next.deb" > /dev/null
	check "dpkg upgrades the package" dpkg_root -i "$tmp/next/next.deb"
	check "upgrade: the edited conffile is kept" \
	    grep -q -x '; local edit' "$dr/etc/tlsproxy/tlsproxy.conf"
	mkdir -p "$dr/var/lib/tlsproxy/acme" "$dr/var/log/tlsproxy"
	check "dpkg removes the package" dpkg_root -r tlsproxy
	check "remove: the daemon goes, the configuration stays" sh -c "
	    [ ! -e '$dr/usr/sbin/tlsproxy' ] && [ -f '$dr/etc/tlsproxy/tlsproxy.conf' ]"
	check "dpkg purges the package" dpkg_root -P tlsproxy
	check "purge: configuration, state and logs go" sh -c "
	    [ ! -e '$dr/etc/tlsproxy/tlsproxy.conf' ] &&
	    [ ! -e '$dr/var/lib/tlsproxy' ] && [ ! -e '$dr/var/log/tlsproxy' ]"
else
	ok "dpkg install, upgrade, remove and purge # SKIP needs root"
fi

# --- sysusers and tmpfiles ---------------------------------------------------
# What the postinst does, applied to the unpacked tree: the user and group
# go into its own /etc/passwd and /etc/group.
check "systemd-sysusers creates the tlsproxy user in the tree" sh -c "
    systemd-sysusers --root='$root' tlsproxy.conf &&
    grep -q '^tlsproxy:' '$root/etc/passwd' && grep -q '^tlsproxy:' '$root/etc/group'"
gid=$(sed -n 's/^tlsproxy:[^:]*:\([0-9]*\):.*/\1/p' "$root/etc/group")
check "systemd-tmpfiles makes /etc/tlsproxy 0750 root:tlsproxy" sh -c "
    systemd-tmpfiles --root='$root' --create tlsproxy.conf &&
    stat -c '%a %u %g' '$root/etc/tlsproxy' | tee /dev/stderr |
    grep -q -x '750 0 $gid'"
check "the units run as the sysusers user" sh -c "
    grep -x 'User=tlsproxy' '$root/lib/systemd/system/tlsproxy.service' &&
    grep -x 'Group=tlsproxy' '$root/lib/systemd/system/tlsproxy.service'"

# --- units -------------------------------------------------------------------
# systemd-analyze verify checks that Exec*= commands exist on this machine.
# The daemon is not installed here, so the units are verified as copies
# whose /usr/sbin/tlsproxy is the unpacked binary; MANPATH lets it find the
# man pages of Documentation= in the package. Any message fails the case,
# warnings about unknown keys included.
mkdir -p "$tmp/units"
for u in tlsproxy.service tlsproxy.socket; do
	sed "s|/usr/sbin/tlsproxy|$bin|g" "$root/lib/systemd/system/$u" > "$tmp/units/$u"
done
check "the units name /usr/sbin/tlsproxy and /etc/tlsproxy/tlsproxy.conf" \
    grep -q -x 'ExecStart=/usr/sbin/tlsproxy -c /etc/tlsproxy/tlsproxy.conf' \
    "$root/lib/systemd/system/tlsproxy.service"
MANPATH=$root/usr/share/man systemd-analyze verify "$tmp/units/tlsproxy.service" \
    "$tmp/units/tlsproxy.socket" > "$tmp/verify" 2>&1
rc=$?
check "systemd-analyze verify: no message" sh -c \
    "cat '$tmp/verify'; [ $rc -eq 0 ] && [ ! -s '$tmp/verify' ]"

# --- the example configuration -----------------------------------------------
# As shipped, it names a certificate and key in /etc/tlsproxy that the
# operator provides: -t must fail on those two files and nothing else.
"$bin" -t -c "$root/etc/tlsproxy/tlsproxy.conf" > "$tmp/t" 2>&1
rc=$?
check "tlsproxy -t on the shipped config: only the certificate files are missing" \
    sh -c "cat '$tmp/t'; [ $rc -ne 0 ] &&
    [ \$(grep -c \"key '\\(cert\\|key\\)': cannot open '/etc/tlsproxy/default\\.\\(pem\\|key\\)'\" '$tmp/t') -eq 2 ] &&
    [ \$(grep -c ': key ' '$tmp/t') -eq 2 ]"
# With them made in the tree, and the config pointed there, it is valid.
etc=$root/etc/tlsproxy
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=localhost -days 2 -keyout "$etc/default.key" \
    -out "$etc/default.pem" > /dev/null 2>&1
sed "s|/etc/tlsproxy/|$etc/|g" "$etc/tlsproxy.conf" > "$etc/test.conf"
check "tlsproxy -t accepts the shipped config once its certificate exists" \
    "$bin" -t -c "$etc/test.conf"

# --- logrotate ---------------------------------------------------------------
lr=$root/etc/logrotate.d/tlsproxy
check "logrotate rotates as the service user, SIGUSR1 to the main process" sh -c "
    grep -q -x '	su tlsproxy tlsproxy' '$lr' &&
    grep -q 'systemctl kill --kill-whom=main --signal=USR1 tlsproxy.service' '$lr' &&
    grep -q '^/var/log/tlsproxy/\\*\\.log ' '$lr' &&
    grep -q -x 'LogsDirectory=tlsproxy' '$root/lib/systemd/system/tlsproxy.service' &&
    systemctl --help | grep -q -e '--kill-whom='"
if command -v logrotate > /dev/null && command -v python3 > /dev/null; then
	# The packaged daemon writes an access log in the tree; the shipped
	# logrotate file, pointed there and run as ourselves, rotates it, and a
	# stand-in systemctl delivers its SIGUSR1 to that daemon.
	logs=$tmp/log
	mkdir -p "$logs"
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	aport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	cat > "$tmp/rotate.conf" <<EOF
[global]
workers = 1
access_log = $logs/access.log
admin = 127.0.0.1:$aport
shutdown_timeout = 5s
[listener t]
bind = 127.0.0.1:$port
context = c
backend = b
[backend b]
address = 127.0.0.1:1
[context c]
cert = $etc/default.pem
key = $etc/default.key
EOF
	"$bin" -c "$tmp/rotate.conf" > "$tmp/daemon.log" 2>&1 &
	pid=$!
	# poke NAME: a connection that sends NAME instead of a handshake; the
	# daemon logs it as a failed handshake once it is listening.
	poke() {
		python3 - "$port" "$1" <<'EOF'
import socket, sys, time
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)
        break
    except OSError:
        time.sleep(0.05)
s.sendall(b"GET /" + sys.argv[2].encode() + b" HTTP/1.0\r\n\r\n")
s.settimeout(2)
try:
    s.recv(100)
except OSError:
    pass
EOF
	}
	# logged FILE: FILE gets a line within five seconds.
	logged() {
		i=0
		while [ $i -lt 50 ]; do
			[ -s "$1" ] && return 0
			sleep 0.1
			i=$((i + 1))
		done
		return 1
	}
	poke before
	check "the packaged daemon writes its access log" logged "$logs/access.log"
	cat > "$stubs/systemctl" <<EOF
#!/bin/sh
[ "\$*" = "kill --kill-whom=main --signal=USR1 tlsproxy.service" ] &&
    kill -USR1 $pid
EOF
	sed -e "s|/var/log/tlsproxy/|$logs/|" \
	    -e "s|^\\([[:space:]]*su\\) .*|\\1 $(id -un) $(id -gn)|" "$lr" > "$tmp/lr.conf"
	check "logrotate -f with the shipped file succeeds" \
	    env PATH="$stubs:$PATH" logrotate -f -s "$tmp/lr.state" "$tmp/lr.conf"
	poke after
	check "after rotation the daemon writes to a new access.log" sh -c "
	    i=0; while [ \$i -lt 50 ] && ! [ -s '$logs/access.log' ]; do sleep 0.1; i=\$((i + 1)); done;
	    [ -s '$logs/access.log' ] && [ -s '$logs/access.log.1' ] &&
	    grep -q 'SIGUSR1: reopening the access log' '$tmp/daemon.log'"

	# --- upgrade in place ----------------------------------------------------
	# The postinst of a newer version finds the service running and
	# upgrades the daemon in place. No systemd runs here: the stand-in
	# systemctl answers MainPID and StatusText from the daemon's /status,
	# which names the process that serves (as MAINPID= tells systemd) and
	# the last upgrade's result, and delivers the signal to that process.
	cat > "$stubs/systemctl" <<'EOF'
#!/bin/sh
field() {
	curl -s --max-time 2 http://127.0.0.1:ADMIN_PORT/status | python3 -c \
	    'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
case "$*" in
"is-active --quiet tlsproxy.service") exit 0 ;;
"show --property=MainPID --value tlsproxy.service") field pid ;;
"show --property=StatusText --value tlsproxy.service") field last_upgrade ;;
"kill --kill-whom=main --signal=USR2 tlsproxy.service") kill -USR2 "$(field pid)" ;;
*) exit 0 ;;
esac
EOF
	sed -i "s/ADMIN_PORT/$aport/" "$stubs/systemctl"
	maint postinst configure 0.0.1 > "$tmp/postinst.out" 2>&1
	check "upgrade: the postinst upgrades the running daemon in place" sh -c "
	    cat '$tmp/postinst.out';
	    grep -q 'upgraded in place: process [0-9]* serves, process $pid drains' '$tmp/postinst.out'"
	wait "$pid"
	check "upgrade: the old process drained and exited 0" [ $? -eq 0 ]
	pid=$(PATH="$stubs:$PATH" systemctl show --property=MainPID --value tlsproxy.service)
	: > "$logs/access.log"
	poke upgraded
	check "upgrade: the new process serves" logged "$logs/access.log"
	# A configuration the new process refuses: the postinst says so at
	# once and the daemon keeps serving.
	echo "workers = many" >> "$tmp/rotate.conf"
	maint postinst configure 0.0.2 > "$tmp/postinst.out" 2>&1
	check "upgrade: a failed one is reported and the daemon keeps serving" sh -c "
	    cat '$tmp/postinst.out';
	    grep -q 'was not upgraded and keeps serving' '$tmp/postinst.out' &&
	    [ \"\$(PATH='$stubs:$PATH' systemctl show --property=MainPID --value tlsproxy.service)\" = $pid ] &&
	    grep -q 'upgrade failed: new process .* error' '$tmp/daemon.log'"
	# Not our child any more: the old process started it.
	kill "$pid"
	i=0
	while [ $i -lt 100 ] && kill -0 "$pid" 2>/dev/null; do
		sleep 0.1
		i=$((i + 1))
	done
	pid=
else
	notok "logrotate or python3 is not installed"
fi

echo "1..$n"
exit $fail
