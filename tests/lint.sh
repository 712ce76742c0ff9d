#!/usr/bin/env bash
# Static analysis for mx2: cppcheck and clang-tidy, and optionally valgrind.
# Exits 1 when anything is found, 0 when clean. Installs cppcheck, clang-tidy
# and valgrind with apt-get when they are missing (needs root then).
#
#   tests/lint.sh                 # cppcheck + clang-tidy (about 1 minute on 2 cores)
#   tests/lint.sh --valgrind      # + every unit test and fuzz-corpus replay under memcheck
#   tests/lint.sh --valgrind-e2e  # + the end-to-end suite with mx2d under memcheck (slow;
#                                 #   MX2_E2E_TESTS="tests/e2e/test_smtp.py ..." picks a subset)
#   tests/lint.sh --only-valgrind # skip cppcheck and clang-tidy (combine with the above)
#
# What runs:
#   1. cmake -DCMAKE_EXPORT_COMPILE_COMMANDS=ON in build-lint/ (Debug, so
#      assert()s stay visible to the analysers).
#   2. cppcheck --enable=warning,portability --inline-suppr over every file in
#      build-lint/compile_commands.json (relay/, queue/, tools/, tests/).
#   3. clang-tidy (checks in /.clang-tidy, where each disabled check has its
#      reason) over relay/*.c, relay/common/*.c, queue/*.c and tools/*.c; the
#      headers of those directories are checked through them.
#   4. --valgrind: `valgrind --error-exitcode=1 --leak-check=full` on each
#      build-lint/bin/test_* and each fuzz-corpus replay (ctest's commands).
#   5. --valgrind-e2e: the pytest suite with MX2_BIN pointing at a directory
#      whose mx2d is a wrapper that execs the real one under memcheck, one log
#      per process; any error or definite leak in a log fails the run. No
#      change to tests/e2e is needed. By hand, from the repo root:
#        d=$(mktemp -d); chmod 1777 $d
#        for t in mx2map mx2ctl; do ln -s $PWD/build-lint/bin/$t $d/; done
#        printf '#!/bin/sh\nexec valgrind -q --vgdb=no --leak-check=full %s %s %s "$@"\n' \
#          --show-leak-kinds=definite --suppressions=$PWD/tests/valgrind.supp \
#          "--log-file=$d/vg.%p.log $PWD/build-lint/bin/mx2d" >$d/mx2d
#        chmod 755 $d/mx2d
#        MX2_SPOOL_MAPSIZE=1073741824 MX2_BIN=$d MX2_SOURCE_DIR=$PWD \
#          /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e
#        find $d -name 'vg.*.log' -size +0   # -q logs only errors: nothing listed = clean
#      valgrind slows mx2d 20-50x: tests with tight timing or RSS bounds may
#      fail from that alone (pytest's exit is shown, only memcheck fails the
#      run; logs with errors are kept in /tmp/mx2vg.*), and a
#      daemon killed with -9 leaves an empty log, which counts as clean.
#      MX2_SPOOL_MAPSIZE: valgrind cannot map the default 64 GiB spool.
#
# Suppressing a finding: only a genuine false positive, inline, with the
# reason on the same or previous line: `// cppcheck-suppress <id>` or
# `/* NOLINT(<check>): why */`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/build-lint
jobs=$(nproc)

do_static=1 do_valgrind=0 do_valgrind_e2e=0
for a in "$@"; do
    case "$a" in
    --valgrind) do_valgrind=1 ;;
    --valgrind-e2e) do_valgrind_e2e=1 ;;
    --only-valgrind) do_static=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "lint: unknown option '$a' (try --help)" >&2
        exit 2
        ;;
    esac
done
if [ "$do_static" = 0 ] && [ "$do_valgrind" = 0 ] && [ "$do_valgrind_e2e" = 0 ]; then
    echo "lint: --only-valgrind needs --valgrind or --valgrind-e2e" >&2
    exit 2
fi

# ---- tools ----
bash tests/deps.sh
want=()
if [ "$do_static" = 1 ]; then
    command -v cppcheck >/dev/null || want+=(cppcheck)
    command -v clang-tidy >/dev/null || command -v clang-tidy-14 >/dev/null || want+=(clang-tidy)
fi
if [ "$do_valgrind" = 1 ] || [ "$do_valgrind_e2e" = 1 ]; then
    command -v valgrind >/dev/null || want+=(valgrind)
fi
if [ "${#want[@]}" -gt 0 ]; then
    echo "lint: installing ${want[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "lint: need root to install: ${want[*]}" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${want[@]}"
fi
tidy=$(command -v clang-tidy || command -v clang-tidy-14 || true)

failed=()
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# ---- configure (compile_commands.json) ----
echo "== cmake (build-lint, compile_commands.json)"
cmake -S . -B "$build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null

if [ "$do_static" = 1 ]; then
    # ---- .clang-tidy: every disabled check must carry a reason ----
    missing_reason=0
    while read -r chk; do
        if ! grep -Eq "^#[[:space:]]+-${chk//./\\.}: [^ ]" .clang-tidy; then
            echo ".clang-tidy: disabled check -$chk has no '#   -$chk: reason' line" >&2
            missing_reason=1
        fi
    done < <(sed -n '/^Checks:/,/^[A-Za-z]/p' .clang-tidy | grep -oE '^\s+-[a-z][A-Za-z0-9.*-]*' |
             sed 's/^\s*-//')
    [ "$missing_reason" = 0 ] || failed+=(".clang-tidy reasons")

    # ---- cppcheck ----
    echo "== cppcheck $(cppcheck --version | sed 's/^Cppcheck //')"
    # Headers are checked through the .c files that include them; system
    # headers are not parsed (missingIncludeSystem is not enabled).
    if cppcheck --enable=warning,portability --error-exitcode=1 --inline-suppr \
        --project="$build/compile_commands.json" -j"$jobs" --quiet \
        --template='{file}:{line}: {severity}: {message} [{id}]' \
        2>"$out/cppcheck.txt"; then
        :
    else
        failed+=(cppcheck)
    fi
    sed "s|^$root/||" "$out/cppcheck.txt" | sort -u >"$out/cppcheck.sorted"
    cat "$out/cppcheck.sorted"
    echo "cppcheck: $(grep -c ': \(error\|warning\|style\|portability\|performance\): ' \
        "$out/cppcheck.sorted" || true) finding(s)"

    # ---- clang-tidy ----
    echo "== $($tidy --version | grep -o 'LLVM version [0-9.]*' | sed 's/LLVM/clang-tidy/')"
    # One process per file, $jobs at a time; each writes its own log so the
    # output does not interleave.
    ls relay/*.c relay/common/*.c queue/*.c tools/*.c >"$out/tidy.files"
    rc=0
    xargs -a "$out/tidy.files" -P"$jobs" -I{} sh -c \
        '"$1" -p "$2" --quiet "$3" >"$4/tidy.$(echo "$3" | tr / _).log" 2>&1' \
        _ "$tidy" "$build" {} "$out" || rc=$?
    # A finding is "file:line:col: error|warning: text [check...]"; the same
    # header finding is reported once per including file, so de-duplicate.
    cat "$out"/tidy.*.log | grep -E '^[^ ]+:[0-9]+:[0-9]+: (error|warning): ' |
        sed "s|^$root/||" | sort -u >"$out/tidy.findings" || true
    cat "$out/tidy.findings"
    if [ "$rc" != 0 ] && [ ! -s "$out/tidy.findings" ]; then
        # clang-tidy failed without a finding: show why (bad config, no
        # compile command for a file, a crash).
        cat "$out"/tidy.*.log | grep -v 'warnings generated\|Suppressed\|Use -header' | head -50
    fi
    n=$(wc -l <"$out/tidy.findings")
    echo "clang-tidy: $n finding(s) in $(wc -l <"$out/tidy.files") files"
    if [ "$rc" != 0 ] || [ "$n" != 0 ]; then
        failed+=(clang-tidy)
    fi
fi

if [ "$do_valgrind" = 1 ] || [ "$do_valgrind_e2e" = 1 ]; then
    echo "== build (build-lint)"
    cmake --build "$build" -j"$jobs" >"$out/build.log" 2>&1 || {
        tail -50 "$out/build.log"
        exit 1
    }
fi

# valgrind's address space cannot take the spool's default 64 GiB LMDB map
# (it is sparse, but it is one mmap): give memcheck runs a 1 GiB spool map
# unless the caller chose one. tests/valgrind.supp holds the only
# suppressions, libconfig's own leak, each with its reason.
export MX2_SPOOL_MAPSIZE=${MX2_SPOOL_MAPSIZE:-1073741824}
# No --track-origins: it doubles the slowdown, enough to starve the timed
# crash test; add it by hand to chase an "uninitialised value" report.
vg=(valgrind -q --error-exitcode=1 --leak-check=full --suppressions="$root/tests/valgrind.supp")

if [ "$do_valgrind" = 1 ]; then
    echo "== valgrind: unit tests and fuzz-corpus replays"
    vgfail=0
    for t in "$build"/bin/test_*; do
        name=$(basename "$t")
        start=$SECONDS
        # Unit tests find their data through MX2_SOURCE_DIR/MX2_BINARY_DIR
        # compiled in; run them from the build directory as ctest does.
        # Definite and possible leaks both fail a unit test: each test frees
        # everything it made.
        # Up to three tries: test_spool's kill -9 test gives its child a
        # random 150-650 ms before the kill, and under memcheck's slowdown a
        # short one can end before the first commit (the test then fails its
        # own assertion, not memcheck). A real memory error repeats on every
        # try.
        for try in 1 2 3; do
            if (cd "$build/tests" && "${vg[@]}" --errors-for-leak-kinds=definite,possible "$t" \
                >"$out/vg.$name.log" 2>&1); then
                note=""
                [ "$try" = 1 ] || note=", try $try"
                echo "ok   $name ($((SECONDS - start))s$note)"
                continue 2
            fi
        done
        echo "FAIL $name ($((SECONDS - start))s, 3 tries)"
        tail -60 "$out/vg.$name.log"
        vgfail=1
    done
    for t in "$build"/bin/fuzz_*; do
        name=$(basename "$t")
        corpus=tests/fuzz/corpus/${name#fuzz_}
        # Only definite leaks fail a replay: a fuzz target keeps its set-up
        # (loop, spool, writer thread) in statics until exit on purpose, which
        # memcheck sees as "possibly lost".
        if "${vg[@]}" --errors-for-leak-kinds=definite "$t" "$corpus" >"$out/vg.$name.log" 2>&1; then
            echo "ok   $name"
        else
            echo "FAIL $name"
            tail -60 "$out/vg.$name.log"
            vgfail=1
        fi
    done
    [ "$vgfail" = 0 ] || failed+=(valgrind)
fi

if [ "$do_valgrind_e2e" = 1 ]; then
    echo "== valgrind: e2e suite with mx2d under memcheck"
    d=$(mktemp -d /tmp/mx2vg.XXXXXX)
    # test_privileges runs mx2d as nobody (setpriv): it must read the
    # wrapper and create its log here, as in /tmp.
    chmod 1777 "$d"
    for t in "$build"/bin/*; do
        [ "$(basename "$t")" = mx2d ] || ln -s "$t" "$d/"
    done
    # -q: a log holds nothing but errors, so any non-empty log is a failure.
    # --vgdb=no: no gdbserver FIFOs in /tmp, which a daemon that dropped
    # privileges cannot unlink (valgrind logs that as an error).
    # Definite leaks count; "possible" ones are interior pointers still held
    # by libuv and mbedTLS when the process is stopped.
    cat >"$d/mx2d" <<EOF
#!/bin/sh
exec valgrind -q --vgdb=no --leak-check=full --show-leak-kinds=definite \\
    --errors-for-leak-kinds=definite --suppressions=$root/tests/valgrind.supp \\
    --log-file=$d/vg.%p.log "$build/bin/mx2d" "\$@"
EOF
    chmod +x "$d/mx2d"
    e2erc=0
    # Debian's python3 has python3-pytest (as in tests/CMakeLists.txt).
    py=/usr/bin/python3
    [ -x "$py" ] || py=python3
    # MX2_E2E_TESTS: one or more paths (or node ids), space-separated.
    read -r -a e2etests <<<"${MX2_E2E_TESTS:-tests/e2e}"
    MX2_BIN=$d MX2_SOURCE_DIR=$root PYTHONDONTWRITEBYTECODE=1 \
        "$py" -m pytest -q -p no:cacheprovider "${e2etests[@]}" || e2erc=$?
    bad=$(find "$d" -name 'vg.*.log' -size +0 | sort)
    for f in $bad; do
        echo "-- $f"
        head -80 "$f"
    done
    echo "valgrind-e2e: $(ls "$d"/vg.*.log 2>/dev/null | wc -l) mx2d process(es)," \
        "$(echo "$bad" | grep -c . || true) with errors; pytest exit $e2erc"
    # Only memcheck's verdict counts: under a 20-50x slowdown and valgrind's
    # own memory, tests that bound latency or peak RSS fail for reasons that
    # are not mx2's (test_smtp's 64 MiB VmHWM bound, for one). A crash would
    # show in the daemon's log as an invalid access.
    [ "$e2erc" = 0 ] || echo "valgrind-e2e: note: pytest failed under valgrind (see above);" \
        "timing and RSS bounds do not hold under memcheck, so this alone is not a finding"
    nproc_vg=$(ls "$d"/vg.*.log 2>/dev/null | wc -l)
    if [ "$e2erc" -ge 2 ] || [ "$nproc_vg" = 0 ]; then
        # Interrupted, a usage error or no tests collected (pytest 2-5), or
        # no daemon ever ran: nothing was checked, which is not "clean".
        echo "valgrind-e2e: nothing was checked (pytest exit $e2erc, $nproc_vg mx2d processes)"
        failed+=(valgrind-e2e)
    elif [ -z "$bad" ]; then
        rm -rf "$d"
    else
        failed+=(valgrind-e2e)
    fi
fi

if [ "${#failed[@]}" -gt 0 ]; then
    echo "lint: FAILED: ${failed[*]}"
    exit 1
fi
echo "lint: clean"
