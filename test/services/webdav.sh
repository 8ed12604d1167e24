#!/usr/bin/env bash
# Test service: Apache httpd with mod_dav / mod_dav_fs on 127.0.0.1, as NAS boxes run it.
#
#   webdav.sh start STATEDIR   starts it and writes STATEDIR/webdav.env
#   webdav.sh stop STATEDIR    stops the httpd it started (by its recorded pid)
#
# Apache runs from its own config file under STATEDIR, never through systemd or the system
# configuration. Shares:
#   /dav/  read-write, basic auth (a generated user and password)
#   /ro/   read-only (only GET HEAD OPTIONS PROPFIND; writes get 405), same auth
# both over http, and over https on a second port (self-signed certificate).
# The env file: WEBDAV_URL and WEBDAV_RO_URL (webdav://, without credentials), WEBDAV_USER,
# WEBDAV_PASSWORD, WEBDAV_ROOT_DIR (the local directory behind /dav/), WEBDAV_RO_DIR,
# WEBDAV_ACCESS_LOG (one line per request: method, path, status), WEBDAV_TLS_URL (the same
# /dav/ share over https with a self-signed certificate) and WEBDAV_TLS_CA (that certificate).
set -euo pipefail

cmd=${1:?usage: webdav.sh start|stop STATEDIR}
state=$(realpath -m "${2:?usage: webdav.sh start|stop STATEDIR}")
dir="$state/webdav"
httpd=/usr/sbin/apache2

stop() {
  if [ -f "$dir/httpd.pid" ]; then
    pid=$(cat "$dir/httpd.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/httpd.pid"
  fi
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: webdav.sh start|stop STATEDIR" >&2; exit 2; }

if [ ! -x "$httpd" ] || ! command -v htpasswd >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    bash "$(dirname "$0")/install-packages.sh"
  else
    echo "webdav: apache2 and apache2-utils are not installed" >&2; exit 1
  fi
fi

stop
mkdir -p "$dir/dav" "$dir/ro" "$dir/lock" "$dir/run"
chmod 755 "$state" "$dir"
user=bitfog
# MD5 (apr1), not bcrypt: bcrypt costs ~100 ms of CPU on every request, which would dominate
# every measurement. (Most NAS boxes do not use bcrypt either.)
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | head -c 20)
htpasswd -cbm "$dir/htpasswd" "$user" "$password" >/dev/null 2>&1
printf 'read-only content\n' > "$dir/ro/readme.txt"
run_as=""
if [ "$(id -u)" = 0 ]; then
  run_user=www-data
  id "$run_user" >/dev/null 2>&1 || run_user=nobody
  run_group=$(id -gn "$run_user")
  chown -R "$run_user:$run_group" "$dir/dav" "$dir/ro" "$dir/lock" "$dir/run"
  chmod 644 "$dir/htpasswd"
  run_as="User $run_user
Group $run_group"
fi

free_port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
port=$(free_port)
tls_port=$(free_port)
while [ "$tls_port" = "$port" ]; do tls_port=$(free_port); done
# A self-signed certificate for the https listener (webdavs://): clients must be told to trust it.
openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$dir/tls.key" -out "$dir/tls.pem" >/dev/null 2>&1
mods=/usr/lib/apache2/modules
# mod_unixd (User/Group) is compiled into Debian's httpd; load it only where it is a module.
unixd=""
[ -f "$mods/mod_unixd.so" ] && unixd="LoadModule unixd_module $mods/mod_unixd.so"
cat > "$dir/httpd.conf" <<CONF
ServerRoot "$dir"
ServerName 127.0.0.1
Listen 127.0.0.1:$port
Listen 127.0.0.1:$tls_port
PidFile "$dir/httpd.pid"
ErrorLog "$dir/error.log"
LogLevel warn
# Method, path and status of every request: tests count GETs to prove nothing is re-read.
LogFormat "%m %U %>s" bitfog
CustomLog "$dir/access.log" bitfog
DefaultRuntimeDir "$dir/run"
Mutex file:$dir/run default
$run_as
LoadModule mpm_event_module $mods/mod_mpm_event.so
$unixd
LoadModule authz_core_module $mods/mod_authz_core.so
LoadModule authn_core_module $mods/mod_authn_core.so
LoadModule authn_file_module $mods/mod_authn_file.so
LoadModule authz_user_module $mods/mod_authz_user.so
LoadModule auth_basic_module $mods/mod_auth_basic.so
LoadModule allowmethods_module $mods/mod_allowmethods.so
LoadModule alias_module $mods/mod_alias.so
LoadModule mime_module $mods/mod_mime.so
LoadModule dav_module $mods/mod_dav.so
LoadModule dav_fs_module $mods/mod_dav_fs.so
LoadModule socache_shmcb_module $mods/mod_socache_shmcb.so
LoadModule ssl_module $mods/mod_ssl.so
SSLSessionCache "shmcb:$dir/run/ssl_scache(512000)"
<VirtualHost 127.0.0.1:$tls_port>
  SSLEngine on
  SSLCertificateFile "$dir/tls.pem"
  SSLCertificateKeyFile "$dir/tls.key"
</VirtualHost>
TypesConfig /etc/mime.types
DavLockDB "$dir/lock/DavLock"
# Large uploads (the 1 GiB test) and slow machines.
LimitRequestBody 0
Timeout 300
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
StartServers 1
ServerLimit 4
ThreadsPerChild 16
MaxRequestWorkers 64
DocumentRoot "$dir/ro"
<Directory />
  Require all denied
</Directory>
Alias /dav "$dir/dav"
<Directory "$dir/dav">
  Dav On
  AuthType Basic
  AuthName "bitfog test"
  AuthUserFile "$dir/htpasswd"
  Require valid-user
</Directory>
Alias /ro "$dir/ro"
<Directory "$dir/ro">
  Dav On
  AuthType Basic
  AuthName "bitfog test"
  AuthUserFile "$dir/htpasswd"
  Require valid-user
  AllowMethods GET HEAD OPTIONS PROPFIND
</Directory>
CONF

"$httpd" -d "$dir" -f "$dir/httpd.conf" -k start
for _ in $(seq 1 100); do
  if [ -s "$dir/httpd.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
if ! [ -s "$dir/httpd.pid" ]; then
  echo "webdav: apache did not start" >&2
  cat "$dir/error.log" >&2 2>/dev/null || true
  exit 1
fi

cat > "$state/webdav.env" <<ENV
WEBDAV_URL=webdav://127.0.0.1:$port/dav/
WEBDAV_RO_URL=webdav://127.0.0.1:$port/ro/
WEBDAV_USER=$user
WEBDAV_PASSWORD=$password
WEBDAV_ROOT_DIR=$dir/dav
WEBDAV_RO_DIR=$dir/ro
WEBDAV_ACCESS_LOG=$dir/access.log
WEBDAV_TLS_URL=webdavs://127.0.0.1:$tls_port/dav/
WEBDAV_TLS_CA=$dir/tls.pem
ENV
