#!/bin/sh
# Vendors the chat page's browser libraries into services/gateway/web/static/vendor/ (committed):
# markdown (marked), its sanitizer (DOMPurify) and code highlighting (highlight.js), each with its
# licence. The pages load them from the gateway itself: no CDN, no build step at run time.
#
# Run it only to change a version: it needs npm and the registry; it prints each file's sha256 so a
# reviewer can compare them with the committed files (`sha256sum services/gateway/web/static/vendor/*`).
# The ES-module builds are taken as published, unchanged: the pages import them as modules.
set -eu

MARKED=18.2.1
DOMPURIFY=3.4.18
HIGHLIGHT=11.12.0 # @highlightjs/cdn-assets: the browser build with the common languages

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/services/gateway/web/static/vendor"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

unpack() { # package@version -> folder
  dir="$WORK/$(echo "$1" | tr '/@' '__')"
  mkdir -p "$dir"
  (cd "$WORK" && npm pack --silent "$1" >"$dir.name")
  tar xzf "$WORK/$(cat "$dir.name")" -C "$dir"
  echo "$dir/package"
}

mkdir -p "$OUT"
rm -f "$OUT"/*

m=$(unpack "marked@$MARKED")
cp "$m/lib/marked.esm.js" "$OUT/marked.esm.js"
cp "$m/LICENSE" "$OUT/marked.LICENSE.txt"

d=$(unpack "dompurify@$DOMPURIFY")
cp "$d/dist/purify.es.mjs" "$OUT/purify.es.mjs"
cp "$d/LICENSE" "$OUT/dompurify.LICENSE.txt" # dual-licensed: Apache-2.0 (this file) or MPL-2.0
cp "$d/LICENSE-MPL" "$OUT/dompurify.LICENSE-MPL.txt"

h=$(unpack "@highlightjs/cdn-assets@$HIGHLIGHT")
cp "$h/es/highlight.min.js" "$OUT/highlight.min.js"
cp "$h/styles/github.min.css" "$OUT/highlight-github.min.css"
cp "$h/LICENSE" "$OUT/highlight.LICENSE.txt"

cat >"$OUT/VERSIONS.txt" <<EOF
marked $MARKED (npm: marked, lib/marked.esm.js) MIT
dompurify $DOMPURIFY (npm: dompurify, dist/purify.es.mjs) Apache-2.0 OR MPL-2.0
highlight.js $HIGHLIGHT (npm: @highlightjs/cdn-assets, es/highlight.min.js, styles/github.min.css) BSD-3-Clause
Reproduce with scripts/vendor_web.sh.
EOF

(cd "$OUT" && sha256sum -- *)
