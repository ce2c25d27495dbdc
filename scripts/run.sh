#!/usr/bin/env bash
# `make run`: a standalone broker on 127.0.0.1:9092 with its data in ./data and a topic `demo`
# of 3 partitions. Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
LISTEN=${RUNNEL_LISTEN:-127.0.0.1:9092}
METRICS=${RUNNEL_METRICS_LISTEN:-127.0.0.1:9644}
DATA=${RUNNEL_DATA_DIR:-data}

"$BIN/runnel-broker" --standalone --data-dir "$DATA" --listen "$LISTEN" --metrics-listen "$METRICS" &
broker=$!
trap 'kill -TERM $broker 2>/dev/null; wait $broker' INT TERM
for _ in $(seq 1 200); do
  "$BIN/runnel" --bootstrap "$LISTEN" topic list >/dev/null 2>&1 && break
  kill -0 $broker 2>/dev/null || { echo "runnel-broker failed to start" >&2; exit 1; }
  sleep 0.05
done
"$BIN/runnel" --bootstrap "$LISTEN" topic describe demo >/dev/null 2>&1 \
  || "$BIN/runnel" --bootstrap "$LISTEN" topic create demo --partitions 3
cat <<MSG

Runnel is running: broker on $LISTEN (data in $DATA/), metrics on http://$METRICS/metrics
In another terminal:
  export RUNNEL_BOOTSTRAP=$LISTEN PATH=\$PWD/$BIN:\$PATH
  printf 'k1:hello\nk2:world\n' | runnel produce demo --key-separator :
  runnel consume demo --from-beginning --max-messages 2
  runnel topic describe demo
Ctrl-C stops the broker (it flushes and exits cleanly).

MSG
wait $broker
