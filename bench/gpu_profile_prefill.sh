#!/usr/bin/env bash
# Where a 2048-token prefill's GPU time goes, kernel by kernel, llq beside transformers SDPA
# (issue #13's "prefill 2048 no slower than SDPA"): Nsight Compute over `llq-host bench`
# (one metric, gpu__time_duration, no replay; clocks left alone) and torch.profiler over the
# peer (bench/peers/profile_prefill.py). Kernel durations under ncu are serialized launches,
# so their sum is not the wall time; the shares are what this is for. `--no-checks` keeps bench's
# accuracy checks (the unfused f32 attention path, the CPU model) out of the profile: what it
# lists is the warm-up and timed prefill (2 × each length) and one eager decode step.
#   bench/gpu_profile_prefill.sh OUT     (carry dist/llq-host-cuda.xz dist/speed13-bundle.tar.xz)
set -u
FINAL="${1:?usage: bench/gpu_profile_prefill.sh OUT}"
OUT="$(mktemp -d)"; mkdir -p "$FINAL"
trap 'tar czf "$FINAL/gpu-profile-prefill.tgz" -C "$OUT" . ; rm -rf "$OUT"' EXIT
source bench/gpu_lib.sh
[ -x "$BIN" ] || unpack_binary
[ -f plugins/nf4.so ] || tar xJf dist/speed13-bundle.tar.xz
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
T=${TOKENS:-2048}
echo "ncu: $NCU"
timeout 240 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
  "$BIN" bench --model synthetic:llama-3.2-1b --device cuda --prompt-lens $T --batch-sizes 1 \
  --decode-steps 1 --repeats 1 --decode eager --no-checks > "$OUT/ncu-llq.csv" 2> "$OUT/ncu-llq.log"
echo "ncu llq: exit $?"; tail -3 "$OUT/ncu-llq.log"
python3 - "$OUT/ncu-llq.csv" > "$OUT/llq-kernels.txt" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
hi = next(i for i, r in enumerate(rows) if "Kernel Name" in r and "gpu__time_duration.sum" in r)
head = rows[hi]; ki = head.index("Kernel Name"); vi = head.index("gpu__time_duration.sum")
scale = {"nsecond": 1, "usecond": 1e3, "msecond": 1e6, "second": 1e9}
unit = 1.0
tot = collections.defaultdict(float); n = collections.Counter()
for r in rows[hi + 1:]:
    if r[vi] in scale: unit = scale[r[vi]]; continue
    try: v = float(r[vi].replace(",", "")) * unit
    except ValueError: continue
    tot[r[ki][:90]] += v; n[r[ki][:90]] += 1
s = sum(tot.values())
print(f"llq-host bench, all kernels of one run (prefills + 1 decode step); {sum(n.values())} launches, {s/1e6:.2f} ms summed (ns from gpu__time_duration.sum)")
for k, v in sorted(tot.items(), key=lambda x: -x[1])[:40]:
    print(f"{v/1e6:9.3f} ms {100*v/s:5.1f}% {n[k]:5d}x  {k}")
PY
cat "$OUT/llq-kernels.txt" | head -45
timeout 200 python3 bench/peers/profile_prefill.py "$OUT" $T > "$OUT/peer.log" 2>&1
echo "peer profile: exit $?"; head -30 "$OUT/sdpa-kernels.txt"
