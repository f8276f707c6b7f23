#!/usr/bin/env bash
# Measures what blynk-device adds to a minimal thumbv6m-none-eabi firmware: builds the same
# skeleton bare, with the compiler builtins any network firmware links, with the library, and
# with the library and the serde codec called beside it (what the lean codec saves), and prints
# .text, .rodata, .data and .bss of each. Needs `rustup component add llvm-tools`.
set -euo pipefail
cd "$(dirname "$0")"
rustup target add thumbv6m-none-eabi >/dev/null
size=$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-size)
for features in "" with-builtins with-blynk with-serde; do
    cargo build --quiet --release --features "$features"
    echo "== ${features:-bare}"
    "$size" -A target/thumbv6m-none-eabi/release/blynk-size | grep -E '^\.(text|rodata|data|bss) '
done
