fn main() {
    kaprobe::cli::main().terminate()
}
