# Sourced by the perf/file_to_*.sh scripts, after they set $root (the
# repository). Not a script of its own.

# Sets $binary: the release binary, built first, unless
# LOG_CAPTURER_BINARY names another build (e.g. the previous commit's, to
# measure side by side without building this one).
bench_binary() {
    if [ -z "${LOG_CAPTURER_BINARY:-}" ]; then
        cargo build --release --quiet --manifest-path "$root/Cargo.toml"
    fi
    binary=${LOG_CAPTURER_BINARY:-$root/target/release/log-capturer}
}

# Prints the [daemon] table and a [sources.bench] file source reading
# WORK/input.log to its end, labelled service = "bench", state in WORK/data.
bench_file_source() {
    cat <<TOML
[daemon]
pin_threads = true
data_dir = "$1/data"
metrics_addr = "127.0.0.1:0"

[sources.bench]
type = "file"
paths = ["$1/input.log"]
exit_on_eof = true
labels = { service = "bench" }
TOML
}

bench_machine() {
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
}
