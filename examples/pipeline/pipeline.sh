#!/usr/bin/env bash
# A five-minute pipeline with the runnel CLI only: application logs are shipped into the topic
# `logs`, a consumer group counts the ERROR lines per minute, and every minute with at least
# THRESHOLD errors becomes an alert record in the topic `alerts`.
#
#   examples/pipeline/pipeline.sh            # all steps: topics, ship, count, alerts
#   examples/pipeline/pipeline.sh ship       # only ship logs (LOG_FILE, or five minutes of sample logs)
#   examples/pipeline/pipeline.sh count      # only count what the group has not counted yet
#   examples/pipeline/pipeline.sh alerts     # only print the alerts
#
# Environment:
#   RUNNEL_BOOTSTRAP  a broker, HOST:PORT (default 127.0.0.1:9092, as `make run`)
#   RUNNEL            the runnel CLI (default: `runnel` on PATH)
#   THRESHOLD         errors per minute that make an alert (default 5)
#   LOG_FILE          a log to ship instead of the sample; lines as the sample's:
#                     2025-06-01T12:00:07Z ERROR checkout payment declined
#   LOGS_TOPIC, ALERTS_TOPIC, GROUP   names (default logs, alerts, error-counter)
set -euo pipefail

RUNNEL=${RUNNEL:-runnel}
THRESHOLD=${THRESHOLD:-5}
LOGS_TOPIC=${LOGS_TOPIC:-logs}
ALERTS_TOPIC=${ALERTS_TOPIC:-alerts}
GROUP=${GROUP:-error-counter}
export RUNNEL_BOOTSTRAP=${RUNNEL_BOOTSTRAP:-127.0.0.1:9092}

command -v "$RUNNEL" >/dev/null \
  || { echo "pipeline: no runnel CLI at '$RUNNEL': set RUNNEL, or put target/release on PATH (make release)" >&2; exit 1; }

# Topics: created with the CLI unless they exist. On Kubernetes, apply
# examples/pipeline/topics.yaml first: the operator then owns them and this step only checks.
topics() {
  local topic partitions
  for spec in "$LOGS_TOPIC:3" "$ALERTS_TOPIC:1"; do
    topic=${spec%%:*} partitions=${spec##*:}
    if "$RUNNEL" topic describe "$topic" >/dev/null 2>&1; then
      echo "topic $topic exists"
    else
      "$RUNNEL" topic create "$topic" --partitions "$partitions"
    fi
  done
}

# Five minutes of sample logs ending at the current minute: 120 lines per minute from three
# services, with 2, 8, 0, 12 and 4 ERROR lines in those minutes (so 8 and 12 pass the default
# threshold).
sample_logs() {
  local now errors=(2 8 0 12 4) m minute
  now=$(date -u +%s)
  for m in 0 1 2 3 4; do
    minute=$(date -u -d "@$((now - (4 - m) * 60))" +%Y-%m-%dT%H:%M)
    awk -v minute="$minute" -v errors="${errors[m]}" 'BEGIN {
      split("api checkout search", service, " ")
      for (i = 0; i < 120; i++) {
        level = "INFO"; message = "request served in " (10 + i % 40) "ms"
        if (i % 10 == 0 && i / 10 < errors) { level = "ERROR"; message = "upstream timeout after 5000ms" }
        else if (i % 17 == 0) { level = "WARN"; message = "slow query" }
        printf "%s:%02dZ %s %s %s\n", minute, int(i / 2), level, service[i % 3 + 1], message
      }
    }'
  done
}

# Ship: one record per line, keyed by the service (the third field), so that each service's
# lines stay in order in one partition.
ship() {
  local source=${LOG_FILE:-}
  if [[ -n $source ]]; then cat -- "$source"; else sample_logs; fi \
    | awk '{ print $3 "|" $0 }' \
    | "$RUNNEL" produce "$LOGS_TOPIC" --key-separator '|'
  echo "shipped logs into $LOGS_TOPIC"
}

# Count: read as the consumer group GROUP what it has not read yet (from the beginning the
# first time; the group commits its offsets, so a second run counts only new lines), stop after
# 5 s without records, count ERROR lines per minute of their own timestamp, and produce one
# alert per minute at or above THRESHOLD: key = the minute, value = a JSON object.
count() {
  "$RUNNEL" consume "$LOGS_TOPIC" --group "$GROUP" --from-beginning --timeout-ms 5000 --format '%v' \
    | awk -v threshold="$THRESHOLD" '
        $2 == "ERROR" { errors[substr($1, 1, 16)]++ }
        END {
          for (minute in errors)
            if (errors[minute] >= threshold)
              printf "%s|{\"minute\":\"%s\",\"errors\":%d,\"threshold\":%d}\n", minute, minute, errors[minute], threshold
        }' \
    | sort \
    | tee /dev/stderr \
    | "$RUNNEL" produce "$ALERTS_TOPIC" --key-separator '|'
  echo "counted; alerts (above) written to $ALERTS_TOPIC"
}

alerts() {
  "$RUNNEL" consume "$ALERTS_TOPIC" --from-beginning --timeout-ms 2000 --print-key
}

case ${1:-all} in
  topics) topics ;;
  ship) ship ;;
  count) count ;;
  alerts) alerts ;;
  all) topics; ship; count; alerts ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
