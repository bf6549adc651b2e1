#!/usr/bin/env bash
# Build (once) a custom Telegraf with only the plugins the end-to-end test
# needs, from the telegraf module version in our go.mod, and print its path.
#
#   examples/e2e/build-telegraf.sh          # prints e.g. ~/.cache/service_latency/telegraf-v1.37.2-1a2b3c4d
#
# The binary is cached in ${XDG_CACHE_HOME:-$HOME/.cache}/service_latency/,
# keyed by the version and the plugin list (a hash of TAGS), so only a fresh
# machine, a version bump or a new plugin pays for the build (~1.5 min, ~490 MB
# of module downloads the first time); a binary cached before a plugin was
# added is never reused.
#
# It is built inside the telegraf release's own module (its go.mod and go.sum
# exactly as released, from the module cache): our go.mod is not touched, the
# dependency versions are the ones Telegraf ships with, and every download is
# checked against the release's go.sum. No sumdb or -mod=mod tricks needed.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
GO="${GO:-go}"
TAGS="custom,inputs.execd,outputs.influxdb,outputs.file,outputs.prometheus_client"
# the plugins a good binary lists: TAGS without "custom", one a word
PLUGINS="${TAGS#custom,}"; PLUGINS="${PLUGINS//,/ }"

version="$(cd "$root" && "$GO" list -m -f '{{.Version}}' github.com/influxdata/telegraf)"
case "$version" in v[0-9]*) ;; *) echo "build-telegraf: bad telegraf version '$version' in go.mod" >&2; exit 1 ;; esac

cache="${XDG_CACHE_HOME:-$HOME/.cache}/service_latency"
key="$(printf '%s' "$TAGS" | sha256sum | cut -c1-8)"
bin="$cache/telegraf-$version-$key"
mkdir -p "$cache"

# The cached binary is good when it runs, reports the expected version and
# has the plugins the test uses.
good() {
  [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qxF "Telegraf ${version#v}" || return 1
  local have; have="$("$bin" plugins 2>/dev/null)" || return 1
  for p in $PLUGINS; do
    grep -qxF "$p" <<<"$have" || return 1
  done
}

if good; then echo "$bin"; exit 0; fi

# One build at a time (make e2e and go test may race for it).
exec 9>"$cache/.telegraf-$version-$key.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if good; then echo "$bin"; exit 0; fi

echo "build-telegraf: building Telegraf $version (-tags $TAGS) into $bin ..." >&2
start=$(date +%s)
# Fetch the release module (verified against sum.golang.org like any module).
src="$(cd "$root" && "$GO" mod download -json "github.com/influxdata/telegraf@$version" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
[ -f "$src/go.mod" ] || { echo "build-telegraf: telegraf $version not found in the module cache" >&2; exit 1; }

tmp="$(mktemp "$cache/.telegraf-$version-$key.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# -mod=readonly: use the release's go.mod/go.sum as they are (the module cache
# is read-only anyway). GOFLAGS from the caller must not add -mod=mod.
(cd "$src" && GOFLAGS=-mod=readonly GOWORK=off CGO_ENABLED=0 \
  "$GO" build -trimpath -tags "$TAGS" \
    -ldflags "-s -w -X github.com/influxdata/telegraf/internal.Version=${version#v}" \
    -o "$tmp" ./cmd/telegraf) >&2
chmod 0755 "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
echo "build-telegraf: built in $(( $(date +%s) - start ))s" >&2
good || { echo "build-telegraf: $bin is not Telegraf ${version#v} with $TAGS" >&2; exit 1; }
echo "$bin"
