#!/usr/bin/env bash
# Makes sure a Docker Engine answers: installs Debian's docker.io (and the tools the tests and the benchmark's
# quick mode use; prometheus for promtool and a real scraper) when they are missing, starts dockerd when it is
# not running, and fails loudly if it cannot.
set -euo pipefail

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "error: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]}) or run as root" >&2
        exit 1
    fi
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    echo "== starting dockerd"
    (dockerd >/tmp/dockerd.log 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    if ! docker info >/dev/null 2>&1; then
        echo "error: dockerd did not start; its log:" >&2
        tail -50 /tmp/dockerd.log >&2
        exit 1
    fi
fi
echo "== docker engine $(docker version --format '{{.Server.Version}}')"
