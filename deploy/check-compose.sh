#!/usr/bin/env bash
# Validate a compose file without a Docker engine: `docker-compose config -q` resolves
# anchors and ${VAR:-default} and checks it against the compose schema, talking to no daemon.
# Usage: deploy/check-compose.sh [FILE]   (default: docker-compose.yml at the repo root)
# Installs Debian's docker-compose package when no compose CLI is present (needs root + apt).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
file="${1:-$repo_root/docker-compose.yml}"

if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    echo "check-compose: installing docker-compose (apt)" >&2
    if ! log="$({ apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose; } 2>&1)"; then
        echo "$log" >&2
        exit 1
    fi
    compose=(docker-compose)
fi

"${compose[@]}" -f "$file" config -q
# Compose interpolates the services of every profile, enabled or not: a plain `up` must not need an
# optional profile's settings (flower checks FLOWER_BASIC_AUTH in its container, never with ${VAR:?}).
env -u FLOWER_BASIC_AUTH "${compose[@]}" -f "$file" config -q
"${compose[@]}" -f "$file" --profile flower config -q
echo "check-compose: $file is valid"
