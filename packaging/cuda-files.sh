# Sourced by build-deb.sh and build-tarball.sh: the files of gantry-agent-cuda, laid out
# alike in the package and in the CUDA tarball. Sets cuda_dir to ONNX Runtime's GPU build
# and its CUDA runtime as `scripts/tools.sh onnxruntime-cuda` lays them out.
source scripts/tools.sh onnxruntime-cuda
cuda_dir="$(dirname "$GANTRY_ONNXRUNTIME_CUDA")"
if [ ! -d "$cuda_dir/licenses" ]; then
    # GANTRY_ONNXRUNTIME_CUDA pointed elsewhere: the files come from the cached wheels.
    unset GANTRY_ONNXRUNTIME_CUDA
    source scripts/tools.sh onnxruntime-cuda
    cuda_dir="$(dirname "$GANTRY_ONNXRUNTIME_CUDA")"
fi

# cuda_install ROOT: the libraries into ROOT/usr/lib/gantry/cuda; ONNX Runtime's notices
# and each wheel's license into ROOT/usr/share/doc/gantry-agent-cuda, and the copyright
# paragraphs covering them appended to the copyright file there.
cuda_install() {
    local root="$1"
    local doc="$root/usr/share/doc/gantry-agent-cuda"
    install -d -m 0755 "$root/usr/lib/gantry/cuda" "$doc/onnxruntime" "$doc/licenses"
    install -m 0644 "$cuda_dir"/lib*.so* "$root/usr/lib/gantry/cuda/"
    gzip -9n < "$cuda_dir/ThirdPartyNotices.txt" > "$doc/onnxruntime/ThirdPartyNotices.txt.gz"
    local license
    for license in "$cuda_dir"/licenses/*.txt; do
        gzip -9n < "$license" > "$doc/licenses/$(basename "$license").gz"
    done
    {
        cat packaging/debian/copyright-cuda
        echo
        # The MIT license's own paragraph, as the CPU build's copyright has it.
        awk 'BEGIN { RS = ""; ORS = "\n\n" } /^License: MIT/' packaging/debian/copyright-onnxruntime | sed '$d'
    } >> "$doc/copyright"
    find "$doc" -type f -exec chmod 0644 {} +
}
