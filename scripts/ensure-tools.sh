#!/usr/bin/env bash
# What the tests need on this machine, run by `npm test` before anything else (npm's pretest): Debian's Docker
# Engine, openssl, wrk and nginx (the benchmark's quick mode), prometheus (promtool and a real scraper), chromium
# and runsc. As root on Debian it installs what is missing and starts dockerd; anywhere else it stops at once
# with one line that names what to install or start.
set -euo pipefail

# Each command the tests run, and the Debian package that brings it.
TOOLS=(dockerd:docker.io docker:docker.io openssl:openssl wrk:wrk nginx:nginx-light promtool:prometheus prometheus:prometheus chromium:chromium runsc:runsc)

missing=()
for tool in "${TOOLS[@]}"; do
    command -v "${tool%%:*}" >/dev/null 2>&1 && continue
    package=${tool#*:}
    [[ " ${missing[*]} " == *" $package "* ]] || missing+=("$package")
done

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

if ((${#missing[@]})); then
    if ! can_install; then
        echo "error: the tests need ${missing[*]}: install them (Debian: apt-get install ${missing[*]}), or run npm test as root on Debian, which installs them" >&2
        exit 1
    fi
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    if [ -n "${DOCKER_HOST:-}" ] || [ "$(id -u)" != 0 ]; then
        echo "error: no Docker Engine answers at ${DOCKER_HOST:-the local socket} (docker info): start it (systemctl start docker), or run npm test as root, which starts dockerd" >&2
        exit 1
    fi
    echo "== starting dockerd"
    log=${DOCKERD_LOG:-/var/log/dockerd.log}
    # A daemon outlives whoever starts it: it must not inherit a TMPDIR that a test run removes when it ends.
    (unset TMPDIR; dockerd >"$log" 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    if ! docker info >/dev/null 2>&1; then
        echo "error: dockerd did not start within 60 s; its log ($log):" >&2
        tail -50 "$log" >&2
        exit 1
    fi
fi
echo "== docker engine $(docker version --format '{{.Server.Version}}'), tools present: ${TOOLS[*]%%:*}"
