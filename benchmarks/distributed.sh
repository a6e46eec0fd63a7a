#!/bin/sh
# Data-parallel training steps at 1 and 2 ranks: `nnbackend bench --distributed` under mpiexec.
#
#   benchmarks/distributed.sh [OPTIONS OF nnbackend bench --distributed]
#   RANKS="1 2 4" OUT=results benchmarks/distributed.sh --sizes small,medium,large,lenet
#
# One launch per rank count (RANKS, default "1 2"), each writing OUT/distributed-N.json
# (OUT default: the current directory), then a summary of every size: time per step, the
# speed-up over the first rank count, bytes all-reduced per step and the all-reduce share.
# The global batch is the same at every rank count (strong scaling), and every rank runs
# cores ÷ ranks BLAS threads (the command sets and reports them).
#
# OpenBLAS: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for the launches, as for every
# benchmark here (`nnbackend bench` would restart each rank without them anyway), so the
# kernel is OpenBLAS's own choice for the CPU, the one the single-process tables ran.
# PYTHON: the interpreter whose environment has nnbackend[mpi] (default: python3 on PATH);
# mpiexec is taken from beside it, else from PATH.
set -eu

PYTHON=${PYTHON:-python3}
RANKS=${RANKS:-"1 2"}
OUT=${OUT:-.}
bindir=$(dirname "$(command -v "$PYTHON")")
if [ -x "$bindir/mpiexec" ]; then MPIEXEC="$bindir/mpiexec"; else MPIEXEC=mpiexec; fi
mkdir -p "$OUT"

files=""
for n in $RANKS; do
    json="$OUT/distributed-$n.json"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        "$MPIEXEC" -n "$n" "$PYTHON" -m nnbackend bench --distributed "$@" --json "$json"
    echo
    files="$files $json"
done

# shellcheck disable=SC2086  # one argument per file
"$PYTHON" - $files <<'EOF'
import json
import sys

runs = [json.load(open(path, encoding="utf-8")) for path in sys.argv[1:]]
print("summary: size, ranks, threads per rank, µs/step, speed-up, all-reduce bytes/step, AR%")
base = {row["size"]: row["seconds"] for row in runs[0]["rows"]}
for run in runs:
    for row in run["rows"]:
        threads = "/".join(str(t) for t in sorted(set(row["threads_per_rank"])))
        print(f"  {row['size']:<10} {row['world_size']:>2} ranks  {threads:>3} threads  "
              f"{row['seconds'] * 1e6:>10,.1f}  {base[row['size']] / row['seconds']:5.2f}x  "
              f"{row['allreduce_bytes']:>10,} B  {100 * row['allreduce_share']:5.1f}%")
EOF
