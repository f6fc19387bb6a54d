#!/bin/sh
exec java -Xmx64m -cp '/opt/kafka/libs/*' kafka.admin.BrokerApiVersionsCommand "$@"
