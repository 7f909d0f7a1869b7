fn main() {
    std::process::exit(llq_host::cli::main());
}
