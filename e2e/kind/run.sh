#!/usr/bin/env bash
# Corral end to end on kind, for machines with Docker (not run in CI: the CI machines have no
# Docker; tests/e2e/test_cluster_e2e.py runs the same assertions on the local control plane).
#
#   e2e/kind/run.sh          build the images, create the cluster, install, check, keep it
#   KEEP=0 e2e/kind/run.sh   ... and delete the cluster at the end
#
# Needs: docker, kind, kubectl, helm 3.14+, and the repository's .venv (`make setup`) for the
# checks (the official MCP SDK client).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=${CLUSTER:-corral-e2e}
TAG=${TAG:-e2e}
KEEP=${KEEP:-1}
SYSTEM=corral-system
SERVERS=mcp-e2e
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; [ "$KEEP" = 1 ] || kind delete cluster --name "$CLUSTER"' EXIT

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e/kind: $tool is required" >&2; exit 1; }
done

echo "== building images"
for image in operator shim runner; do
  name=corral; [ "$image" = operator ] || name=corral-$image
  docker build -f "$ROOT/Dockerfile.$image" -t "$name:$TAG" "$ROOT"
done

echo "== creating kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config "$ROOT/e2e/kind/cluster.yaml"
for name in corral corral-shim corral-runner; do kind load docker-image --name "$CLUSTER" "$name:$TAG"; done

echo "== database and secrets"
kubectl apply -f "$ROOT/e2e/kind/postgres.yaml"
kubectl -n corral-db rollout status deploy/postgres --timeout=180s
for ns in "$SYSTEM" "$SERVERS"; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
  kubectl label namespace "$ns" --overwrite pod-security.kubernetes.io/enforce=restricted
done
docker run --rm --user "$(id -u)" -v "$WORK:/work" "corral:$TAG" gateway new-signing-key /work/signing-key.pem >/dev/null
docker run --rm "corral:$TAG" gateway new-session-key > "$WORK/session-key"
head -c 32 /dev/urandom > "$WORK/kms-key"
AUDIT_TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
USER_TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
kubectl -n "$SYSTEM" create secret generic corral-database \
  --from-literal=dsn=postgresql://postgres:corral-e2e@postgres.corral-db.svc:5432/corral \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$SYSTEM" create secret generic corral-signing-key --from-file=signing-key.pem="$WORK/signing-key.pem" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$SYSTEM" create secret generic corral-session-key --from-file=session-key="$WORK/session-key" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$SYSTEM" create secret generic corral-kms-key --from-file=key="$WORK/kms-key" --dry-run=client -o yaml | kubectl apply -f -
for namespace in "$SERVERS" "$SYSTEM"; do
  kubectl -n "$namespace" create secret generic corral-audit --from-literal=token="$AUDIT_TOKEN" --dry-run=client -o yaml | kubectl apply -f -
done

cat > "$WORK/jwks-config.yaml" <<YAML
publicBaseUrl: http://127.0.0.1:8000
database: {dsn: {value: unused}}
identity: {signingKeys: [{file: /work/signing-key.pem}]}
sessions: {keys: [{file: /work/session-key}]}
YAML
JWKS=$(docker run --rm --user "$(id -u)" -v "$WORK:/work" "corral:$TAG" gateway jwks --config /work/jwks-config.yaml)

# The chart's gateway finds servers by watching the API server (discovery.kind: kubernetes).
cat > "$WORK/values.yaml" <<YAML
images:
  operator: {repository: corral, tag: "$TAG"}
  shim: {repository: corral-shim, tag: "$TAG"}
  runner: {repository: corral-runner, tag: "$TAG"}
  pullPolicy: Never
operator:
  watchNamespaces: [$SERVERS]
  audit:
    tokenSecret: corral-audit
    namespaceTokens: [{namespace: $SERVERS, secret: {name: corral-audit}}]
gateway:
  publicBaseUrl: http://127.0.0.1:8000
  autoscaling: {enabled: false}
  replicas: 1
  config:
    users:
      - {token: "$USER_TOKEN", user: alice@example.com, groups: [engineering]}
YAML
printf 'identity:\n  jwks: %s\n' "$(printf '%s' "$JWKS" | python3 -c 'import json,sys; print(json.dumps(json.dumps(json.load(sys.stdin))))')" >> "$WORK/values.yaml"

echo "== helm install"
helm upgrade --install corral "$ROOT/charts/corral" -n "$SYSTEM" -f "$WORK/values.yaml" --wait --timeout 5m
kubectl apply -f "$ROOT/e2e/kind/servers.yaml"
for server in everything time; do
  kubectl -n "$SERVERS" wait "mcpserver/$server" --for=condition=Ready --timeout=300s
done

echo "== checks through the gateway"
kubectl -n "$SYSTEM" port-forward svc/corral-gateway 8000:80 >"$WORK/port-forward.log" 2>&1 &
FORWARD=$!
trap 'kill $FORWARD 2>/dev/null; rm -rf "$WORK"; [ "$KEEP" = 1 ] || kind delete cluster --name "$CLUSTER"' EXIT
"$ROOT/.venv/bin/python" "$ROOT/e2e/kind/check.py" --gateway http://127.0.0.1:8000 \
  --namespace "$SERVERS" --token "$USER_TOKEN"

kubectl -n "$SERVERS" delete mcpserver everything --wait=true
kubectl -n "$SERVERS" wait --for=delete deploy/everything --timeout=120s
echo "== all checks passed"
