#!/bin/sh
# Health check of a dlstack image: gpu_verify.py (framework imports, a LeNet-5 training run,
# the GPU and driver checks) on the GPU when the NVIDIA container runtime exposed one, else on the
# CPU (--cpu), so an image is healthy on a CPU-only host too. Performance checks are skipped.
#   DLSTACK_HEALTHCHECK_MODE=auto|gpu|cpu   force a mode (default auto)
#   DLSTACK_FRAMEWORKS=torch,tensorflow     frameworks required in this image (set by the image)
#   DLSTACK_HEALTHCHECK_TRAIN_STEPS=N       LeNet-5 steps (set by the image)
# Arguments are passed on to gpu_verify.py (e.g. --json).
set -eu
mode="${DLSTACK_HEALTHCHECK_MODE:-auto}"
if [ "$mode" = auto ]; then
  mode=cpu
  if [ -e /dev/nvidiactl ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    mode=gpu
  fi
fi
frameworks="${DLSTACK_FRAMEWORKS:-}"
set -- "$@" --skip-perf --train-steps "${DLSTACK_HEALTHCHECK_TRAIN_STEPS:-20}" --frameworks "$frameworks"
old_ifs=$IFS
IFS=,
for framework in $frameworks; do
  set -- "$@" --require "$framework"
done
IFS=$old_ifs
if [ "$mode" = cpu ]; then
  set -- "$@" --cpu
fi
exec python3 /opt/dlstack/gpu_verify.py "$@"
