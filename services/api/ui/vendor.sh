#!/usr/bin/env bash
# `make ui`: copy the pinned front-end libraries (package-lock.json, checked by integrity hash)
# into static/vendor/, each with its licence. The dashboard has no build step: these files and
# static/js/*.js are served as they are. Run it after changing a version in package.json.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp package.json package-lock.json "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
uplot="$work/node_modules/uplot"
mkdir -p static/vendor/uplot
cp "$uplot/dist/uPlot.iife.min.js" "$uplot/dist/uPlot.min.css" "$uplot/LICENSE" static/vendor/uplot/
node -e 'console.log("uplot " + require(process.argv[1]).version)' "$uplot/package.json" > static/vendor/uplot/VERSION
echo "vendored: $(cat static/vendor/uplot/VERSION)"
