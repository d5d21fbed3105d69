#!/usr/bin/env bash
# System packages the README's commands need beyond Python: the ROCm cross-compilation toolchain
# (AMD device bitcode libraries, ld.lld), LLVM's readelf/objdump for `mlcgen inspect`, and for the
# Vulkan target the Vulkan loader, Mesa's drivers (lavapipe runs Vulkan on the CPU: tests, CI) and
# a C++ compiler (the wgpu device plugin is compiled from source on first use).
# Installs only what is missing; uses sudo when not root.
set -euo pipefail
need=()
[ -d /usr/lib/x86_64-linux-gnu/amdgcn/bitcode ] || [ -d /opt/rocm/amdgcn/bitcode ] || need+=(rocm-device-libs)
command -v ld.lld >/dev/null || [ -x /usr/lib/llvm-19/bin/ld.lld ] || need+=(lld-19)
[ -x /usr/lib/llvm-19/bin/llvm-readelf ] || need+=(llvm-19)
ls /usr/lib/x86_64-linux-gnu/libvulkan.so.1 >/dev/null 2>&1 || need+=(libvulkan1)
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
command -v g++ >/dev/null || need+=(g++)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-system-deps: installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
