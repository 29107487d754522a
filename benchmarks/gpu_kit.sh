#!/usr/bin/env bash
# Build the kit that benchmarks/gpu_check.sh installs on the GPU device machine: .gpukit/ (git-ignored).
#
# The device machine (NVIDIA H200) has Python 3.12, CUDA torch and CUDA JAX but no MuJoCo, MJX, MuJoCo Warp or
# robot models, and no package index; files reach it only through the device tool's `carry`, at most 64 MiB per
# call (working tree included). MuJoCo Warp's warp-lang wheel is 149 MB (its warp.so alone 115 MB compressed),
# so the kit is split over two calls of gpu_check.sh:
#   .gpukit/a  (part a): mujoco + mujoco-core + mujoco-mjx + trimesh wheels, the Go2 model, warp.so.xz part 1
#   .gpukit/b  (part b): mujoco-warp, warp-lang without its binaries, PyOpenGL, EGL loaders, warp.so.xz part 2
# Part b finds part a's files on the same machine (a warm machine keeps /tmp between calls for ~30 s).
#
# Run here, once (needs PyPI and Debian's package index; ~3 minutes, mostly xz):  bash benchmarks/gpu_kit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.gpukit
PART_A_WARP_MB=${PART_A_WARP_MB:-41}  # MB of warp.so.xz in part a; the rest goes to part b (both under 64 MiB)
# The versions the conformance suite passes with here (mujoco 4.0.1 = mujoco + mujoco-core of that version).
WHEELS_A=(mujoco==4.0.1 mujoco-core==4.0.1 mujoco-mjx==3.17.0 trimesh==5.2.0)
WHEELS_B=(mujoco-warp==4.0.0 PyOpenGL==3.1.10)
WARP=warp-lang==1.19.0
GL_DEBS=(libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)  # EGL for MUJOCO_GL=egl, if the device lacks them

rm -rf "$KIT" && mkdir -p "$KIT/a" "$KIT/b/gl" "$KIT/tmp"
download() {  # cp312 manylinux x86_64 wheels, no dependencies (the device has numpy, jax, scipy, etils, absl)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64 -d "$1" "${@:2}"
}
download "$KIT/a" "${WHEELS_A[@]}"
download "$KIT/b" "${WHEELS_B[@]}"
download "$KIT/tmp" "$WARP"

# warp-lang: the package without its CPU compiler (warp-clang.so: CUDA kernels compile with NVRTC, inside
# warp.so), tests and examples; warp.so travels xz-compressed in two pieces.
( cd "$KIT/tmp" && unzip -q warp_lang-*.whl -d warp_pkg )
mv "$KIT/tmp/warp_pkg/warp/bin/warp.so" "$KIT/tmp/warp.so"
rm -rf "$KIT/tmp/warp_pkg/warp/bin/warp-clang.so" "$KIT/tmp/warp_pkg/warp/tests" "$KIT/tmp/warp_pkg/warp/examples"
tar -C "$KIT/tmp/warp_pkg" -cJf "$KIT/b/warp_lite.tar.xz" .
sha256sum "$KIT/tmp/warp.so" | cut -d' ' -f1 > "$KIT/b/warp.so.sha256"
xz -T2 -6 -c "$KIT/tmp/warp.so" > "$KIT/tmp/warp.so.xz"
split -b "${PART_A_WARP_MB}M" -d -a 1 "$KIT/tmp/warp.so.xz" "$KIT/tmp/warp.so.xz.part"
mv "$KIT/tmp/warp.so.xz.part0" "$KIT/a/"
mv "$KIT/tmp/warp.so.xz.part1" "$KIT/b/"
[ ! -e "$KIT/tmp/warp.so.xz.part2" ] || { echo "warp.so.xz needs more than two parts" >&2; exit 1; }

# The Go2 model from example-robot-data (its dist-info, so that importlib finds the package, and the Go2 folder).
SITE=$(python3 -c "import importlib.metadata as m; print(m.distribution('example-robot-data').locate_file(''))")
DIST=$(cd "$SITE" && ls -d example_robot_data-*.dist-info)
tar -C "$SITE" -cJf "$KIT/a/robot_data.tar.xz" "$DIST" cmeel.prefix/share/example-robot-data/robots/go2_description

# EGL loaders (Debian amd64 packages, unpacked on the device only if it has none).
LISTS=$(mktemp -d); mkdir -p "$LISTS/partial"
APT=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$LISTS")
apt-get "${APT[@]}" update >/dev/null 2>&1 || true
( cd "$KIT/b/gl" && apt-get "${APT[@]}" download "${GL_DEBS[@]}" >/dev/null 2>&1 ) || echo "note: no EGL debs (the device's own EGL will be used)"
rm -rf "$KIT/tmp" "$LISTS"

for part in a b; do
  size=$(du -sb "$KIT/$part" | cut -f1)
  echo "$KIT/$part: $((size / 1024 / 1024)) MiB"
done
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "working tree: $((tree / 1024 / 1024)) MiB (each call carries the tree plus one part: 64 MiB at most)"
