#!/usr/bin/env bash
# The Docker image's build steps (each RUN line of the Dockerfile's build stage calls one of them), and
# `check`, which replays that build stage without Docker so CI fails when a build step breaks.
#
#   scripts/docker-build.sh deps           install every dependency from package-lock.json (dev ones too)
#   scripts/docker-build.sh compile        TypeScript → dist/ (the package's `build` script)
#   scripts/docker-build.sh runtime DIR    DIR = package.json + dist/ + production dependencies only
#   scripts/docker-build.sh smoke DIR      the tree in DIR starts (--help, --version) and has no dev dependency
#   scripts/docker-build.sh check [DIR]    replay the Dockerfile's build stage in a temp dir: its WORKDIR, COPY
#                                          and RUN lines in order, absolute paths under the temp dir; with DIR,
#                                          copy the runtime tree (what the final stage copies) to DIR
#
# Build steps run in the current directory (the image's /build). `check` reads the Dockerfile itself, so the
# two cannot drift apart: a build-stage instruction it cannot replay is an error, not a skipped line.
set -euo pipefail

die() {
  echo "docker-build: $*" >&2
  exit 1
}

step_deps() {
  npm ci --ignore-scripts --no-audit --no-fund
}

step_compile() {
  npm run build
}

step_runtime() {
  local dir=${1:?runtime needs a target directory}
  rm -rf "$dir"
  mkdir -p "$dir"
  cp package.json package-lock.json "$dir/"
  cp -R dist "$dir/dist"
  (cd "$dir" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund)
}

step_smoke() {
  local dir=${1:?smoke needs the runtime directory}
  node "$dir/dist/cli.js" --help >/dev/null || die "'node dist/cli.js --help' failed in $dir"
  node "$dir/dist/cli.js" --version || die "'node dist/cli.js --version' failed in $dir"
  local dev
  dev=$(cd "$dir" && node -p "Object.keys(require('./package.json').devDependencies ?? {}).join(' ')")
  # A dev dependency may also be a production one's dependency (protobufjs needs @types/node): only one
  # that no production package pulls in is an error.
  for name in $dev; do
    if [ -e "$dir/node_modules/$name" ] && ! (cd "$dir" && npm ls "$name" --omit=dev --all >/dev/null 2>&1); then
      die "dev dependency $name is in the runtime tree"
    fi
  done
  [ ! -e "$dir/node_modules/typescript" ] || die "typescript is in the runtime tree"
}

# Maps a path of the build container to the temp dir standing for its filesystem.
in_fs() {
  local fs=$1 workdir=$2 path=$3
  case "$path" in
    /*) printf '%s%s' "$fs" "$path" ;;
    *) printf '%s%s/%s' "$fs" "$workdir" "$path" ;;
  esac
}

replay_copy() {
  local root=$1 fs=$2 workdir=$3
  shift 3
  local args=("$@")
  [ ${#args[@]} -ge 2 ] || die "COPY needs a source and a destination: COPY ${args[*]}"
  local dest=${args[-1]}
  unset 'args[-1]'
  local target
  target=$(in_fs "$fs" "$workdir" "$dest")
  for src in "${args[@]}"; do
    case "$src" in
      --*) die "COPY option $src is not replayed by the check" ;;
      /* | *..*) die "COPY source $src is outside the build context" ;;
    esac
    [ -e "$root/$src" ] || die "COPY source $src does not exist"
    if [ -d "$root/$src" ]; then
      mkdir -p "$target"
      cp -R "$root/$src/." "$target/"
    elif [ ${#args[@]} -gt 1 ] || [ "${dest: -1}" = / ]; then
      mkdir -p "$target"
      cp "$root/$src" "$target/"
    else
      mkdir -p "$(dirname "$target")"
      cp "$root/$src" "$target"
    fi
  done
}

replay_run() {
  local fs=$1 workdir=$2
  shift 2
  [ "${1:-}" = scripts/docker-build.sh ] || die "build-stage RUN must call scripts/docker-build.sh: RUN $*"
  local cmd=("$1" "$2")
  shift 2
  for arg in "$@"; do
    case "$arg" in
      /*) cmd+=("$fs$arg") ;;
      *) cmd+=("$arg") ;;
    esac
  done
  (cd "$fs$workdir" && "${cmd[@]}")
}

check() {
  local out=${1:-}
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  local tmp
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/docker-build-check.XXXXXX")
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT
  local fs=$tmp/fs
  mkdir -p "$fs"
  # Where npm reads packages from, not what it installs: npm ci installs exactly package-lock.json either way.
  export npm_config_prefer_offline=true

  local stage=before workdir=/ runtime_src=''
  local line words
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      '' | '#'*) continue ;;
    esac
    read -r -a words <<<"$line"
    case "$stage:${words[0]}" in
      before:ARG) ;;
      before:FROM)
        [ "${words[2]:-}" = AS ] && [ "${words[3]:-}" = build ] || die "the first stage must be 'FROM ... AS build'"
        stage=build
        ;;
      build:WORKDIR)
        workdir=${words[1]}
        mkdir -p "$fs$workdir"
        ;;
      build:COPY)
        echo "docker-build: $line"
        replay_copy "$root" "$fs" "$workdir" "${words[@]:1}"
        ;;
      build:RUN)
        echo "docker-build: $line"
        replay_run "$fs" "$workdir" "${words[@]:1}"
        ;;
      build:FROM) stage=final ;;
      build:*) die "the check cannot replay this build-stage line: $line" ;;
      final:RUN) die "the final stage must not RUN (the check does not replay it): $line" ;;
      final:COPY)
        if [ "${words[1]}" = --from=build ]; then
          [ -e "$fs${words[2]}" ] || die "the final stage copies ${words[2]}, which the build stage did not make"
          runtime_src=${runtime_src:-${words[2]}}
        fi
        ;;
      final:*) ;;
      *) die "unexpected line: $line" ;;
    esac
  done <"$root/Dockerfile"
  [ "$stage" = final ] || die "the Dockerfile has no final stage after the build stage"
  [ -n "$runtime_src" ] || die "the final stage copies nothing from the build stage"

  if [ -n "$out" ]; then
    rm -rf "$out"
    mkdir -p "$(dirname "$out")"
    cp -R "$fs$runtime_src" "$out"
    echo "docker-build: runtime tree copied to $out"
  fi
  echo "docker-build: check passed"
}

case "${1:-}" in
  deps) step_deps ;;
  compile) step_compile ;;
  runtime) step_runtime "${2:-}" ;;
  smoke) step_smoke "${2:-}" ;;
  check) check "${2:-}" ;;
  *) die "usage: $0 deps | compile | runtime DIR | smoke DIR | check [DIR]" ;;
esac
