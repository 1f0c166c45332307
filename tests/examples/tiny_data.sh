# tests/examples/tiny_data.sh -- sourced by run_examples.sh and
# tools/valgrind_examples.sh: writes tiny random datasets in the CIFAR-10
# binary and the gzip'd IDX layouts for the examples' end-to-end runs.

# make_cifar DIR RECORDS: CIFAR-10 binary records, label i % 10 then 3072 bytes.
make_cifar() {
    mkdir -p "$1"
    for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
        : >"$1/$f.bin"
        for ((i = 0; i < $2; i++)); do
            printf "\\$(printf %03o $((i % 10)))" >>"$1/$f.bin"
            head -c 3072 /dev/urandom >>"$1/$f.bin"
        done
    done
}

# be32 N: N as 4 big-endian bytes.
be32() {
    printf "\\$(printf %03o $(($1 >> 24 & 255)))\\$(printf %03o $(($1 >> 16 & 255)))"
    printf "\\$(printf %03o $(($1 >> 8 & 255)))\\$(printf %03o $(($1 & 255)))"
}

# make_idx DIR PREFIX N: gzip'd IDX images (N, 28, 28) and labels i % 10.
make_idx() {
    mkdir -p "$1"
    { printf '\000\000\010\003'; be32 "$3"; be32 28; be32 28; head -c $(($3 * 784)) /dev/urandom; } |
        gzip -c >"$1/$2-images-idx3-ubyte.gz"
    { printf '\000\000\010\001'; be32 "$3"; for ((i = 0; i < $3; i++)); do
        printf "\\$(printf %03o $((i % 10)))"; done; } | gzip -c >"$1/$2-labels-idx1-ubyte.gz"
}
