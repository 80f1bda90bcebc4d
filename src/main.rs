fn main() {
    std::process::exit(kaprobe::cli::main());
}
