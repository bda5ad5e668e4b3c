#!/usr/bin/env bash
# Checks that the Dockerfile builds both binaries as written, without Docker.
#
# It replays the `builder` stage in a fresh temp directory standing in for the
# image's root: WORKDIR /src is "$tmp/src", each COPY copies exactly the paths
# it names from the build context (the repository), and each RUN runs with
# `bash -c` in the working directory. Then it checks the binaries answer
# --help and that every `COPY --from=builder` source of the runtime stage
# exists. The host's toolchain and cargo cache stand in for the Rust image's.
#
# Usage: scripts/dockerfile-dry-run.sh [Dockerfile]   (KEEP=1 keeps the temp dir)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dockerfile=${1:-$repo/Dockerfile}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dockerfile-dry-run.XXXXXX")
if [[ -z ${KEEP:-} ]]; then
    trap 'rm -rf "$tmp"' EXIT
fi
echo "dry run of $dockerfile in $tmp"

# The Dockerfile's instructions one per line: comments dropped and backslash
# continuations joined, as the Dockerfile parser does.
instructions() {
    sed -e '/^[[:space:]]*#/d' "$dockerfile" | sed -e ':a' -e '/\\$/{N;s/\\\n//;ba}'
}

# COPY <src>... <dst> from the build context, with Docker's rules: a directory
# source copies its contents, several sources or a trailing slash make <dst> a
# directory, a relative <dst> is under the WORKDIR.
copy_from_context() {
    local dst=${!#} src
    [[ $dst == /* ]] || dst=$workdir/$dst
    dst=$tmp$dst
    for src in "${@:1:$#-1}"; do
        if [[ -d $repo/$src ]]; then
            mkdir -p "$dst"
            cp -a "$repo/$src/." "$dst/"
        elif [[ $# -gt 2 || $dst == */ ]]; then
            mkdir -p "$dst"
            cp -a "$repo/$src" "$dst/"
        else
            mkdir -p "$(dirname "$dst")"
            cp -a "$repo/$src" "$dst"
        fi
    done
}

stage='' workdir=/ runtime_sources=()
while read -r instruction args; do
    [[ -n $instruction ]] || continue
    instruction=${instruction^^}
    if [[ $instruction == FROM ]]; then
        if [[ ${args,,} =~ [[:space:]]as[[:space:]]+builder$ ]]; then stage=builder; else stage=other; fi
        continue
    fi
    if [[ $stage == other ]]; then
        if [[ $instruction == COPY && $args == *--from=builder* ]]; then
            read -ra words <<<"$args"
            for word in "${words[@]:0:${#words[@]}-1}"; do
                [[ $word == --* ]] || runtime_sources+=("$word")
            done
        fi
        continue
    fi
    [[ $stage == builder ]] || continue
    case $instruction in
    ARG) ;;
    WORKDIR)
        [[ $args == /* ]] || args=$workdir/$args
        workdir=$args
        mkdir -p "$tmp$workdir"
        ;;
    COPY)
        [[ $args != --* ]] || { echo "unsupported in the builder stage: COPY $args" >&2; exit 1; }
        read -ra words <<<"$args"
        echo "+ COPY $args"
        copy_from_context "${words[@]}"
        ;;
    RUN)
        # The fake root: the literal /out/ prefix becomes "$tmp/out/". Stdin
        # is not the instruction stream, which the loop is reading.
        echo "+ RUN (in $tmp$workdir)"
        (cd "$tmp$workdir" && env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR \
            bash -c "${args//\/out\//$tmp/out/}") </dev/null
        ;;
    *)
        echo "unsupported in the builder stage: $instruction $args" >&2
        exit 1
        ;;
    esac
done < <(instructions)

for bin in ferrocd ferrocd-operator; do
    path=$tmp/out/usr/local/bin/$bin
    [[ -x $path ]] || { echo "missing or not executable: $path" >&2; exit 1; }
    help=$("$path" --help) || { echo "$bin --help exited non-zero" >&2; exit 1; }
    # A stale placeholder `fn main() {}` would also exit 0.
    [[ $help == *"Usage: $bin"* ]] || { echo "$bin --help prints no usage: a placeholder binary?" >&2; exit 1; }
done
[[ ${#runtime_sources[@]} -gt 0 ]] || { echo "no COPY --from=builder in the runtime stage" >&2; exit 1; }
for src in "${runtime_sources[@]}"; do
    [[ -e $tmp$src ]] || { echo "runtime stage copies a missing path: $src" >&2; exit 1; }
done
echo "ok: the builder stage builds ferrocd and ferrocd-operator; runtime COPY sources exist"
