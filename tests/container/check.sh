#!/usr/bin/env bash
# Builds the image and checks it the way an operator would meet it: the
# daemon runs as a non-root user, keeps its state on the volume, reports
# healthy through the HEALTHCHECK command, and stops with exit 0 on
# `docker stop` (SIGTERM). Every service URL points at a closed loopback port,
# so nothing leaves the machine; the daemon logs the failures and keeps going.
#
# Needs Docker. Run from anywhere: bash tests/container/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

image=funnelfix:check
name=funnelfix-check-$$
volume=funnelfix-check-$$
config=$(mktemp)
cleanup() {
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker volume rm "$volume" >/dev/null 2>&1 || true
    rm -f "$config"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    docker logs "$name" 2>&1 | tail -20 >&2 || true
    exit 1
}

docker build --network host -t "$image" .
echo "image: $(docker image inspect --format '{{.Size}}' "$image") bytes"

closed=http://127.0.0.1:9
sed -e "s#https://us.posthog.com#$closed#" \
    -e "s#https://api.github.com#$closed#" \
    -e "s#https://api.telegram.org#$closed#" \
    -e "s#https://api.openai.com/v1#$closed/v1#" \
    config/funnelfix.example.toml >"$config"
chmod a+r "$config"

docker run -d --name "$name" --network host \
    -v "$volume:/var/lib/funnelfix" \
    -v "$config:/etc/funnelfix/funnelfix.toml:ro" \
    -e POSTHOG_API_KEY=phx_check -e GITHUB_TOKEN=ghp_check \
    -e TELEGRAM_BOT_TOKEN=1:check -e OPENAI_API_KEY=sk-check \
    "$image" >/dev/null

[ "$(docker exec "$name" id -u)" != 0 ] || fail "the daemon runs as root"

# The daemon beats as soon as it holds its lock; give the container time to start.
healthy=
for _ in $(seq 1 60); do
    if docker exec "$name" funnelfix health >/dev/null 2>&1; then
        healthy=yes
        break
    fi
    sleep 1
done
[ -n "$healthy" ] || fail "funnelfix health never reported ok"
docker exec "$name" test -s /var/lib/funnelfix/funnelfix.db || fail "no state database on the volume"
echo "health: $(docker exec "$name" funnelfix health)"

docker stop --time 30 "$name" >/dev/null
code=$(docker inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "exit code $code after docker stop"
docker logs "$name" 2>&1 | grep -q "shutting down" || fail "no graceful shutdown in the logs"
if docker logs "$name" 2>&1 | grep -q $'\e\['; then
    fail "colour codes in docker logs"
fi
echo "ok: non-root, healthy, state on the volume, exit 0 on docker stop"
