#!/bin/sh
# Health check of a dlstack image: gpu_verify.py (framework imports, a LeNet-5 training run,
# the GPU and driver checks). Performance checks are skipped.
# Mode:
#   auto (default)  GPU mode (--expect-gpu) when an NVIDIA GPU is visible: on the PCI bus
#                   (vendor 0x10de, class 0x03xx under /sys/bus/pci/devices).
#                   Then a GPU that does not work is a failure, with gpu_verify's diagnosis
#                   (system.driver_state). CPU mode (--cpu) only when no NVIDIA GPU is visible.
#   gpu / cpu       forced; cpu runs the framework checks on the CPU even where a GPU is visible.
# Environment:
#   DLSTACK_HEALTHCHECK_MODE=auto|gpu|cpu   the mode (default auto)
#   DLSTACK_FRAMEWORKS=torch,tensorflow     frameworks required in this image (set by the image)
#   DLSTACK_HEALTHCHECK_TRAIN_STEPS=N       LeNet-5 steps (set by the image)
#   DLSTACK_SYSFS_ROOT, DLSTACK_DEV_ROOT    where sysfs and /dev are (default /sys, /dev; tests)
# Arguments are passed on to gpu_verify.py (e.g. --json).
set -eu
sysfs="${DLSTACK_SYSFS_ROOT:-/sys}"
devdir="${DLSTACK_DEV_ROOT:-/dev}"

# True when an NVIDIA display/3D controller (a GPU, not an NVSwitch) is on the PCI bus.
nvidia_gpu_on_pci_bus() {
  for device in "$sysfs"/bus/pci/devices/*; do
    [ -r "$device/vendor" ] && [ -r "$device/class" ] || continue
    vendor=
    class=
    IFS= read -r vendor <"$device/vendor" || true
    IFS= read -r class <"$device/class" || true
    if [ "$vendor" = 0x10de ]; then
      case "$class" in
        0x03*) return 0 ;;
      esac
    fi
  done
  return 1
}

mode="${DLSTACK_HEALTHCHECK_MODE:-auto}"
case "$mode" in
  auto)
    mode=cpu
    # /dev/nvidiactl alone is no evidence: NVML creates it even where no driver is loaded
    if nvidia_gpu_on_pci_bus; then
      mode=gpu
    fi
    ;;
  gpu | cpu) ;;
  *)
    # exit 1, not 2: Docker reserves a health check's exit code 2
    echo "healthcheck: DLSTACK_HEALTHCHECK_MODE=$mode: expected auto, gpu or cpu" >&2
    exit 1
    ;;
esac

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
else
  set -- "$@" --expect-gpu
fi
exec python3 /opt/dlstack/gpu_verify.py "$@"
