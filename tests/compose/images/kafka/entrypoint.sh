#!/bin/sh
# KAFKA_FOO_BAR=x -> foo.bar=x, as the official image maps its environment.
set -eu
props=/tmp/server.properties  # /opt/kafka belongs to root
env | grep '^KAFKA_' | grep -v '^KAFKA_HEAP_OPTS=' | while IFS='=' read -r name value; do
  key=$(echo "${name#KAFKA_}" | tr 'A-Z_' 'a-z.')
  echo "$key=$value"
done > "$props"
data=$(sed -n 's/^log.dirs=//p' "$props")
if [ ! -f "$data/meta.properties" ]; then
  id=$(java -cp '/opt/kafka/libs/*' kafka.tools.StorageTool random-uuid)
  java -cp '/opt/kafka/libs/*' kafka.tools.StorageTool format -t "$id" -c "$props" --ignore-formatted >/dev/null
fi
exec java -Xmx512m -cp '/opt/kafka/libs/*' kafka.Kafka "$props"
