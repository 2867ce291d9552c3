#!/usr/bin/env bash
# `make demo`: build SmolLM2 once, start the stack, deploy it under two model ids, stream the
# answer from each, print the cluster status, stop the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
t0=$(date +%s)
echo "== building SmolLM2-135M-Instruct (cached after the first run)"
model=$($BIN/slinfer models build smollm2 | tail -n 1)
echo "   $model"
echo "== starting etcd + scheduler + memory + consolidator + one CPU worker"
$BIN/slinfer up --detach
trap '$BIN/slinfer down' EXIT
$BIN/slinfer deploy smollm2-a "$model"
$BIN/slinfer deploy smollm2-b "$model" --keep-alive 600
for id in smollm2-a smollm2-b; do
  echo
  echo "== $id: What is the capital of France?"
  $BIN/slinfer generate "$id" "What is the capital of France?" --temperature 0 --max-tokens 48
done
echo
echo "== cluster status"
$BIN/slinfer status
echo
echo "demo finished in $(( $(date +%s) - t0 )) s"
