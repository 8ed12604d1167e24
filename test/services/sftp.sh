#!/usr/bin/env bash
# Test service for the SFTP backend: OpenSSH's sshd on 127.0.0.1, on a free port, with its
# own host key, config, authorized test key and known_hosts file, all under STATEDIR.
#
#   sftp.sh start STATEDIR   writes STATEDIR/sftp.env:
#                              SFTP_HOST SFTP_PORT SFTP_USER SFTP_KEY SFTP_KNOWN_HOSTS SFTP_ROOT
#                              SFTP_READONLY_KEY (a key whose sessions are read-only)
#   sftp.sh stop STATEDIR    kills exactly the sshd whose pid is in STATEDIR/sftp/sshd.pid
#
# sshd refuses relative paths (it re-executes itself), so everything is made absolute.
# It logs in as the user running the script (root in CI); StrictModes is off because
# STATEDIR usually lives under a world-writable temp directory.
set -euo pipefail

cmd="${1:-}"
state="${2:-}"
if [ -z "$cmd" ] || [ -z "$state" ]; then
  echo "usage: $0 start|stop STATEDIR" >&2
  exit 2
fi
mkdir -p "$state"
state="$(cd "$state" && pwd)"
dir="$state/sftp"
pidfile="$dir/sshd.pid"

stop() {
  if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
  fi
}

find_sshd() {
  for c in /usr/sbin/sshd /usr/local/sbin/sshd "$(command -v sshd 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start() {
  stop
  local sshd
  if ! sshd="$(find_sshd)"; then
    if [ "$(id -u)" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends openssh-server >/dev/null
      sshd="$(find_sshd)"
    else
      echo "sftp: sshd not found (install openssh-server)" >&2
      exit 1
    fi
  fi
  # The privilege-separation directory sshd insists on.
  if [ ! -d /run/sshd ]; then mkdir -p /run/sshd && chmod 0755 /run/sshd; fi

  rm -rf "$dir"
  mkdir -p "$dir/root"
  chmod 700 "$dir"
  ssh-keygen -q -t ed25519 -N '' -C bitfog-test-host -f "$dir/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C bitfog-test-client -f "$dir/client_ed25519"
  # A second key that only gets a read-only SFTP session: writes with it are refused
  # with PERMISSION_DENIED, which root itself would never see.
  ssh-keygen -q -t ed25519 -N '' -C bitfog-test-readonly -f "$dir/readonly_ed25519"
  {
    cat "$dir/client_ed25519.pub"
    printf 'restrict,command="internal-sftp -R" %s\n' "$(cat "$dir/readonly_ed25519.pub")"
  } >"$dir/authorized_keys"
  chmod 600 "$dir/authorized_keys"

  local user port
  user="$(id -un)"
  local tries=0
  while :; do
    port="$(free_port)"
    cat >"$dir/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_ed25519
PidFile $pidfile
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
MaxStartups 64:30:128
MaxSessions 64
LogLevel ERROR
Subsystem sftp internal-sftp
EOF
    "$sshd" -t -f "$dir/sshd_config"
    # Daemon mode: sshd writes its PidFile once it listens.
    if "$sshd" -f "$dir/sshd_config" -E "$dir/sshd.log"; then
      for _ in $(seq 1 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
    fi
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
    tries=$((tries + 1))
    if [ $tries -ge 5 ]; then
      echo "sftp: sshd did not start" >&2
      cat "$dir/sshd.log" >&2 || true
      exit 1
    fi
  done

  printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" >"$dir/known_hosts"

  # Wait until the server answers an SFTP session with the test key.
  local ok=0
  for _ in $(seq 1 50); do
    if echo 'pwd' | sftp -q -b - -P "$port" -i "$dir/client_ed25519" \
      -o BatchMode=yes -o IdentitiesOnly=yes -o UserKnownHostsFile="$dir/known_hosts" \
      -o StrictHostKeyChecking=yes "$user@127.0.0.1" >/dev/null 2>&1; then
      ok=1
      break
    fi
    sleep 0.1
  done
  if [ $ok != 1 ]; then
    echo "sftp: sshd does not accept the test key" >&2
    cat "$dir/sshd.log" >&2 || true
    stop
    exit 1
  fi

  cat >"$state/sftp.env" <<EOF
SFTP_HOST=127.0.0.1
SFTP_PORT=$port
SFTP_USER=$user
SFTP_KEY=$dir/client_ed25519
SFTP_READONLY_KEY=$dir/readonly_ed25519
SFTP_KNOWN_HOSTS=$dir/known_hosts
SFTP_ROOT=$dir/root
EOF
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop STATEDIR" >&2; exit 2 ;;
esac
