#!/usr/bin/env bash
# CI: the Debian package. Builds it with cargo-deb, installs it, checks the
# systemd unit and what the package put on the machine, runs the installed
# server from the unit's ExecStart= as the service user, deletes a file
# through it, stops it with SIGTERM, and purges the package.
# Runs as root from the repo root on Debian 12 (systemd need not be PID 1):
#   bash .ci/deb.sh
# Leaves the machine as it found it (the package purged), also after a
# failure; a package left installed by an earlier run is purged first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

pkg="video-scheduler"
user="video-scheduler"
state=/var/lib/video-scheduler
conf=/etc/video-scheduler/conf.json

step() { printf '\n=== deb: %s (%ss)\n' "$*" "$SECONDS"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
# Polls `$@` every 0.1 s until it succeeds, for at most $1 seconds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS <= deadline)) || return 1
        sleep 0.1
    done
}
installed() {
    local status
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" || return 1
    [[ -n "$status" && "$status" != not-installed ]]
}
purge() {
    if installed; then
        DEBIAN_FRONTEND=noninteractive dpkg --purge "$pkg"
    fi
}

tmp="$(mktemp -d)"
log="$tmp/server.log"
server_pid=
video=
cleanup() {
    local rc=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "$video" ]]; then
        rm -f "$video"
    fi
    if ((rc)); then
        if [[ -s "$log" ]]; then
            echo "--- server log"
            cat "$log"
        fi
        echo "--- purging after the failure"
        purge || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

step "leftovers of an earlier run"
# This script's test files only: a purge keeps a video root with files in it.
rm -fv "$state"/videos/deb-ci-*
if installed; then
    echo "$pkg is installed: purging it"
    purge
fi
# What a purge kept because of a test file (a run killed before its cleanup).
if [[ -d "$state" ]] && rmdir "$state/videos" "$state" 2>/dev/null; then
    echo "removed the empty $state"
fi
if [[ ! -e "$state" ]] && getent passwd "$user" >/dev/null; then
    echo "removing the user $user left by a purge"
    deluser --system --quiet "$user"
fi
if getent group "$user" >/dev/null && ! getent passwd "$user" >/dev/null; then
    delgroup --system --quiet "$user"
fi

step "tools"
missing=()
# What the build links (as in .ci/run), and dpkg-shlibdeps for `$auto`.
for p in gcc pkg-config libmariadb-dev libmariadb-dev-compat libpq-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v adduser >/dev/null || missing+=(adduser)
command -v useradd >/dev/null || missing+=(passwd)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v runuser >/dev/null || missing+=(util-linux)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! cargo deb --version >/dev/null 2>&1; then
    start=$SECONDS
    cargo install cargo-deb --locked
    echo "cargo-deb installed in $((SECONDS - start)) s"
fi
cargo deb --version

step "build the package (cargo deb; features from [package.metadata.deb])"
start=$SECONDS
# It prints the paths of the package and of its debug symbols (.ddeb).
built="$(cargo deb --locked)"
echo "built in $((SECONDS - start)) s:"
echo "$built"
deb="$(grep '\.deb$' <<<"$built")" || fail "cargo deb printed no .deb"
ddeb="$(grep '\.ddeb$' <<<"$built")" || fail "cargo deb printed no .ddeb"
[[ -f "$deb" && -f "$ddeb" ]] || fail "missing $deb or $ddeb"
ls -l "$deb" "$ddeb"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"
depends="$(dpkg-deb --field "$deb" Depends)"
for dep in libc6 libmariadb3 libpq5 adduser; do
    [[ ", $depends" == *", $dep"* ]] || fail "Depends lacks $dep: $depends"
done

step "install (apt-get brings the runtime libraries)"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb"
installed || fail "$pkg is not installed"
files="$(dpkg -L "$pkg")"
echo "$files"
unit="$(grep -E '/lib/systemd/system/video-scheduler\.service$' <<<"$files")" ||
    fail "no systemd unit in the package"
for f in /usr/bin/video-scheduler "$conf"; do
    grep -qxF "$f" <<<"$files" || fail "$f is not in the package"
done
# systemd reads /lib/systemd/system: the same file on merged /usr.
[[ /lib/systemd/system/video-scheduler.service -ef "$unit" ]] ||
    fail "$unit is not /lib/systemd/system/video-scheduler.service"

step "the unit: systemd-analyze verify"
verify_rc=0
verify="$(systemd-analyze verify "$unit" 2>&1)" || verify_rc=$?
echo "${verify:-(no output)}"
((verify_rc == 0)) || fail "systemd-analyze verify exited $verify_rc"
if grep -F video-scheduler <<<"$verify"; then
    fail "systemd-analyze verify warns about our unit"
fi
echo "verify: no warning about video-scheduler.service"
# The exposure score (0 safest, 10 unsafe) of the hardening, for the log.
systemd-analyze security --offline=yes --no-pager "$unit" | tail -n 1

step "conffile, user, directories"
conffiles="$(dpkg-query -W -f='${Conffiles}\n' "$pkg")"
echo "$conffiles"
grep -q "^ $conf [0-9a-f]\{32\}\$" <<<"$conffiles" || fail "$conf is not a conffile"
getent passwd "$user" || fail "no user $user"
getent group "$user" || fail "no group $user"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd "$user")
((uid < 1000)) || fail "$user is not a system user (uid $uid)"
[[ "$home" == "$state" ]] || fail "$user's home is $home"
[[ "$shell" == */nologin || "$shell" == /bin/false ]] || fail "$user has a shell: $shell"
check_stat() {
    local got
    got="$(stat -c '%U:%G %a' "$1")"
    echo "$1: $got"
    [[ "$got" == "$2" ]] || fail "$1 is $got, expected $2"
}
check_stat "$conf" "root:$user 640"
check_stat "$state" "$user:$user 750"
check_stat "$state/videos" "$user:$user 750"
# The installed config is valid, and readable by the service user.
runuser -u "$user" -- /usr/bin/video-scheduler --config "$conf" config >"$tmp/config.json"
cat "$tmp/config.json"
grep -q "\"root\": \"$state/videos\"" "$tmp/config.json" || fail "storage.root is not $state/videos"

step "reinstall (an upgrade's maintainer scripts): idempotent, conffile kept"
sed -i 's/"executors": 4/"executors": 3/' "$conf"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb"
grep -q '"executors": 3' "$conf" || fail "the reinstall replaced the edited conffile"
check_stat "$conf" "root:$user 640"
check_stat "$state" "$user:$user 750"
[[ "$(getent passwd "$user" | cut -d: -f3)" == "$uid" ]] || fail "the reinstall changed $user"

step "run the installed server as the unit would"
# Service= lines of the installed unit: one ExecStart=, User=, Group=,
# WorkingDirectory=, UMask=, TimeoutStopSec= each; Environment= lines.
unit_value() {
    local values
    values="$(sed -n "s/^$1=//p" "$unit")"
    [[ -n "$values" && "$values" != *$'\n'* ]] || fail "expected one $1= in $unit: ${values:-none}"
    echo "$values"
}
read -ra exec_start <<<"$(unit_value ExecStart)"
svc_user="$(unit_value User)"
svc_group="$(unit_value Group)"
workdir="$(unit_value WorkingDirectory)"
umask_value="$(unit_value UMask)"
stop_timeout="$(unit_value TimeoutStopSec)"
stop_timeout="${stop_timeout%s}"
[[ "$stop_timeout" =~ ^[0-9]+$ ]] || fail "TimeoutStopSec=$stop_timeout: expected seconds"
env_vars=(PATH=/usr/sbin:/usr/bin:/sbin:/bin)
while read -ra words; do
    env_vars+=("${words[@]}")
done < <(sed -n 's/^Environment=//p' "$unit")
echo "ExecStart: ${exec_start[*]}"
echo "as $svc_user:$svc_group in $workdir, umask $umask_value, env ${env_vars[*]}"
[[ "${exec_start[0]}" == /usr/bin/video-scheduler ]] || fail "ExecStart runs ${exec_start[0]}"
# Port 0: the kernel picks a free port, the log says which.
(
    cd "$workdir"
    umask "$umask_value"
    exec env -i "${env_vars[@]}" VIDEO_SCHEDULER_LISTEN=127.0.0.1:0 \
        setpriv --reuid="$svc_user" --regid="$svc_group" --init-groups \
        --no-new-privs --bounding-set=-all --inh-caps=-all -- "${exec_start[@]}"
) >"$log" 2>&1 &
server_pid=$!
listening() { grep -q 'listening on http://127.0.0.1:[0-9]' "$log"; }
wait_for 30 listening || fail "the server did not start listening within 30 s"
port="$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log" | head -n 1)"
base="http://127.0.0.1:$port"
echo "server pid $server_pid on $base"
wait_for 30 curl -fsS "$base/readyz" || fail "/readyz not ready within 30 s"
curl -sS "$base/readyz"
echo
[[ "$(ps -o user= -p "$server_pid")" == "$svc_user" ]] || fail "the server does not run as $svc_user"
check_stat "$state/video-scheduler.db" "$user:$user 640"

step "delete a file through the installed server"
id="deb-ci-$(date +%s)-$$"
video="$state/videos/$id"
echo "video bytes" >"$video"
chown "$user:$user" "$video"
code="$(curl -sS -o /dev/null -w '%{http_code}' "$base/video-delete-record/$id")"
[[ "$code" == 200 ]] || fail "GET /video-delete-record/$id answered $code"
echo "recorded $id: HTTP $code"
gone() { [[ ! -e "$video" ]]; }
done_() { curl -fsS "$base/v1/deletions/$id" | grep -q '"state":"done"'; }
wait_for 30 gone || fail "$video still exists after 30 s"
wait_for 30 done_ || fail "/v1/deletions/$id is not done after 30 s"
curl -sS "$base/v1/deletions/$id"
echo
curl -sS "$base/v1/stats"
echo

step "stop with SIGTERM (exit 0 within TimeoutStopSec=${stop_timeout}s)"
kill -TERM "$server_pid"
stopped() { ! kill -0 "$server_pid"; }
wait_for "$stop_timeout" stopped || fail "the server still runs ${stop_timeout} s after SIGTERM"
rc=0
wait "$server_pid" || rc=$?
server_pid=
cat "$log"
((rc == 0)) || fail "the server exited $rc after SIGTERM"
grep -q 'shut down' "$log" || fail "no graceful shutdown in the log"
echo "exited 0"

step "purge"
DEBIAN_FRONTEND=noninteractive dpkg --purge "$pkg"
! installed || fail "$pkg is still known to dpkg"
for path in "$state" /etc/video-scheduler /usr/bin/video-scheduler "$unit"; do
    [[ ! -e "$path" ]] || fail "$path is left after the purge"
done
! getent passwd "$user" >/dev/null || fail "user $user is left after the purge"
! getent group "$user" >/dev/null || fail "group $user is left after the purge"
! dpkg-statoverride --list "$conf" >/dev/null || fail "statoverride of $conf is left"
echo "nothing left"

step "done: every package check passed"
