#!/usr/bin/env bash
# make demo / make demo-down: a local control plane, a Git server with a sample repository,
# the operator as its own process, and the sample ImmutableRelease brought to Ready.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
demo=$root/.demo
bin=$root/bin
export PATH=$bin:$PATH

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
run() { printf '    $ %s\n' "$*"; "$@" 2>&1 | sed 's/^/    /'; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

down() {
  local stopped=
  for name in operator localenv; do
    if alive "$demo/$name.pid"; then
      kill -TERM "$(cat "$demo/$name.pid")" 2>/dev/null || true
      stopped="$stopped $name"
    fi
  done
  for name in operator localenv; do
    local pid
    pid=$(cat "$demo/$name.pid" 2>/dev/null || true)
    [ -n "$pid" ] || continue
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$demo"
  echo "Demo stopped${stopped:+ (${stopped# })}; .demo/ removed."
}

up() {
  if alive "$demo/localenv.pid"; then
    echo "The demo is already running. 'source .demo/env' to use it, 'make demo-down' to stop it."
    exit 0
  fi
  rm -rf "$demo"
  mkdir -p "$demo"

  say "1/9 Starting a local control plane and a Git server"
  note "etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (pods without containers),"
  note "all built from the Go module proxy into bin/. Logs: .demo/logs/ and .demo/localenv.log"
  go build -o "$bin/localenv" ./hack/localenv
  go build -o "$bin/kubectl-release" ./cmd/kubectl-release
  setsid "$bin/localenv" -dir "$demo" -app hack/demo/app >"$demo/localenv.log" 2>&1 < /dev/null &
  echo $! >"$demo/localenv.pid"
  for i in $(seq 1 180); do
    [ -f "$demo/env" ] && break
    if ! alive "$demo/localenv.pid"; then
      echo "The local environment failed to start:"; tail -20 "$demo/localenv.log"; exit 1
    fi
    [ $((i % 10)) -eq 0 ] && note "... still starting (${i}s)"
    sleep 1
  done
  [ -f "$demo/env" ] || { echo "The local environment did not start within 180s; see .demo/localenv.log"; exit 1; }
  # shellcheck disable=SC1091
  source "$demo/env"
  sed 's/^/    /' "$demo/localenv.log"

  say "2/9 Installing the CRD and the operator's RBAC with kubectl"
  note "The same CRD, ServiceAccount, ClusterRole and bindings as config/default."
  run kubectl apply --server-side -k hack/demo/install
  run kubectl wait --for=condition=Established crd/immutablereleases.release.immutable.dev --timeout=60s

  say "3/9 Starting the operator as its own process, as its own ServiceAccount"
  note "bin/manager with a token of immutable-release-controller-manager; logs in .demo/operator.log"
  local token
  token=$(kubectl -n immutable-release-system create token immutable-release-controller-manager --duration=24h)
  cp "$KUBECONFIG" "$demo/operator.kubeconfig"
  kubectl --kubeconfig "$demo/operator.kubeconfig" config set-credentials operator --token="$token" >/dev/null
  kubectl --kubeconfig "$demo/operator.kubeconfig" config set-context --current --user=operator >/dev/null
  KUBECONFIG=$demo/operator.kubeconfig setsid "$bin/manager" --leader-elect=false --metrics-bind-address=0 \
    --health-probe-bind-address=0 --storage-path "$demo/storage" >"$demo/operator.log" 2>&1 < /dev/null &
  echo $! >"$demo/operator.pid"

  say "4/9 Creating the namespace, the Git credentials and the sample ImmutableRelease"
  note "The repository $GIT_REPO_URL holds deploy/prod/: a Deployment, a Service and a ConfigMap,"
  note "every image pinned by digest."
  run kubectl create namespace "$NAMESPACE"
  run kubectl -n "$NAMESPACE" create secret generic "$GIT_SECRET" \
    --from-literal=username="$GIT_USERNAME" --from-literal=password="$GIT_PASSWORD"
  sed "s|https://git.example.com/acme/shop.git|$GIT_REPO_URL|" config/samples/release_v1alpha1_immutablerelease.yaml >"$demo/release.yaml"
  sed 's/^/    | /' "$demo/release.yaml"
  run kubectl apply -f "$demo/release.yaml"

  say "5/9 Waiting until the release is Ready and its Deployment Available"
  if ! run kubectl -n "$NAMESPACE" wait --for=condition=Ready immutablerelease/shop --timeout=120s; then
    echo "The release did not become Ready. Its status and the operator's log:"
    kubectl -n "$NAMESPACE" get immutablerelease shop -o yaml | sed -n '/^status:/,$p'
    tail -20 "$demo/operator.log"
    exit 1
  fi
  run kubectl -n "$NAMESPACE" wait --for=condition=Available deployment/web --timeout=60s
  run kubectl -n "$NAMESPACE" get immutablereleases
  run kubectl -n "$NAMESPACE" get deployments,services,configmaps -l release.immutable.dev/name=shop
  run kubectl -n "$NAMESPACE" get pods -l app=web
  run kubectl -n "$NAMESPACE" get immutablerelease shop -o jsonpath='{range .status.images[*]}{.workload}  {.container}  {.image}{"\n"}{end}'
  run kubectl -n "$NAMESPACE" events --for immutablerelease/shop

  say "6/9 Drift: someone changes the image in place"
  note "kubectl set image writes another digest; the watch event brings the operator, which puts"
  note "Git's digest back at once and says who changed it."
  local evil=ghcr.io/acme/web:hotfix@sha256:eeee000000000000000000000000000000000000000000000000000000000000
  run kubectl -n "$NAMESPACE" set image deployment/web web=$evil
  sleep 1
  run kubectl -n "$NAMESPACE" get deployment web -o jsonpath='{.spec.template.spec.containers[0].image}{"\n"}'
  run kubectl -n "$NAMESPACE" events --for immutablerelease/shop --types Normal
  kubectl -n "$NAMESPACE" wait --for=condition=Ready immutablerelease/shop --timeout=60s >/dev/null

  say "7/9 Drift mode Prevent: the API server refuses the edit"
  note "The operator installs a ValidatingAdmissionPolicy while any release uses Prevent."
  run kubectl -n "$NAMESPACE" patch immutablerelease shop --type merge -p '{"spec":{"drift":{"mode":"Prevent"}}}'
  for _ in $(seq 1 100); do kubectl get validatingadmissionpolicybinding immutable-release-prevent-image-changes >/dev/null 2>&1 && break; sleep 0.1; done
  kubectl -n "$NAMESPACE" wait --for=condition=Ready immutablerelease/shop --timeout=60s >/dev/null
  local refused=
  for _ in $(seq 1 50); do
    if ! out=$(kubectl -n "$NAMESPACE" set image deployment/web web=$evil 2>&1); then refused=1; break; fi
    kubectl -n "$NAMESPACE" wait --for=condition=Ready immutablerelease/shop --timeout=30s >/dev/null; sleep 0.2
  done
  printf '    $ kubectl -n %s set image deployment/web web=%s\n' "$NAMESPACE" "$evil"
  printf '%s\n' "$out" | sed 's/^/    /'
  [ -n "$refused" ] || { echo "The edit was not refused; see .demo/operator.log"; exit 1; }

  say "8/9 A new release through Git: push a new digest, and it is applied"
  local work=$demo/shop
  git clone -q "$GIT_URL" "$work"
  git -C "$work" config user.name "Ada Developer"; git -C "$work" config user.email ada@example.com
  sed -i 's/sha256:1a2b3c4d5e6f7081/sha256:2b3c4d5e6f708192/' "$work/deploy/prod/deployment.yaml"
  run git -C "$work" commit -qam "Release web 1.1"
  run git -C "$work" push -q origin main
  run "$bin/kubectl-release" -n "$NAMESPACE" reconcile shop --timeout 2m

  say "9/9 A broken release: the operator reverts it in Git"
  note "The next digest starts with sha256:dead: on this local cluster its pods never become ready."
  note "After spec.timeout (2m in the sample; 20s here) the operator pushes a revert commit and applies it."
  run kubectl -n "$NAMESPACE" patch immutablerelease shop --type merge -p '{"spec":{"timeout":"20s"}}'
  sed -i 's/sha256:2b3c4d5e6f708192[0-9a-f]*/sha256:dead000000000000000000000000000000000000000000000000000000000000/' "$work/deploy/prod/deployment.yaml"
  run git -C "$work" commit -qam "Release web 1.2"
  run git -C "$work" push -q origin main
  local bad
  bad=$(git -C "$work" rev-parse HEAD)
  kubectl -n "$NAMESPACE" annotate --overwrite immutablerelease shop reconcile.fluxcd.io/requestedAt="$(date +%s)" >/dev/null
  for i in $(seq 1 120); do
    head=$(git ls-remote "$GIT_URL" refs/heads/main | cut -f1)
    [ "$head" != "$bad" ] && break
    [ $((i % 10)) -eq 0 ] && note "... the rollout is failing (${i}s)"
    sleep 1
  done
  run git -C "$work" pull -q --ff-only
  run git -C "$work" log -1
  run kubectl -n "$NAMESPACE" wait --for=condition=Ready immutablerelease/shop --timeout=120s
  run kubectl -n "$NAMESPACE" get deployment web -o jsonpath='{.spec.template.spec.containers[0].image}{"\n"}'
  run "$bin/kubectl-release" -n "$NAMESPACE" history shop

  cat <<MSG

The operator cloned the repository with go-git, checked that every image is pinned by digest,
applied the manifests with server-side apply, waited for the rollout to be healthy, put
back an image changed in place, had the API server refuse the next one, applied a new
release pushed to Git, and rolled a broken one back by reverting it in Git.

Everything keeps running. Explore (the README has a walk-through):
    source .demo/env && export PATH=\$PWD/bin:\$PATH
    kubectl release status shop -n \$NAMESPACE               # conditions, images desired and running
    kubectl -n \$NAMESPACE get imr shop -o yaml               # the whole status
    git clone \$GIT_URL shop                                  # change a digest, commit, push, then:
    kubectl release reconcile shop -n \$NAMESPACE
    tail -f .demo/operator.log

Stop everything with: make demo-down
MSG
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
