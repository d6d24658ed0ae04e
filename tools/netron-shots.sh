#!/usr/bin/env bash
# Regenerates the screenshots in docs/netron/ (docs/netron.md): compiles the examples and
# opens them in Netron in headless Chromium with the netron-shot tool.
#   SHOT=path/to/netron-shot/shot.mjs NETRON=path/to/netron/checkout bash tools/netron-shots.sh
# (NETRON_GIT=path/to/netron.git instead of NETRON unpacks a git repository's HEAD.) A Netron
# checkout without source/onnx-metadata.json gets a small one (tools/netron-metadata.mjs:
# operator categories and input names) so operators keep their colours.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SHOT:?set SHOT to the shot.mjs of netron-shot}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node tools/netron-metadata.mjs > "$tmp/onnx-metadata.json"
src=(--onnx-metadata "$tmp/onnx-metadata.json")
if [ -n "${NETRON:-}" ]; then src+=(--netron "$NETRON"); else src+=(--netron-git "${NETRON_GIT:?set NETRON or NETRON_GIT}"); fi
for e in eiffel patching attribution; do node bin/nns.mjs compile "examples/$e.nns" -o "$tmp/$e.onnx" > /dev/null; done
shot() { node "$SHOT" "${src[@]}" "$@" --quiet; }
shot "$tmp/eiffel.onnx" docs/netron/eiffel-set.png --find /transformer/h.3/mlp/nns.set
shot "$tmp/eiffel.onnx" docs/netron/eiffel-model-properties.png --model-props
shot "$tmp/patching.onnx" docs/netron/patching-set-function.png --find /transformer/h.1/nns.set --enter
shot "$tmp/patching.onnx" docs/netron/patching-saves.png --find /lm_head/nns.save_1
shot "$tmp/patching.onnx" docs/netron/patching-overview.png --full --scale 0.2
shot "$tmp/attribution.onnx" docs/netron/attribution-backward.png --find /transformer/h.2/nns.backward --zoom 0.8
shot "$tmp/attribution.onnx" docs/netron/attribution-attr.png --find /transformer/h.2/nns.save --zoom 0.8
