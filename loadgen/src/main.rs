//! `callosum-loadgen`: benchmarks Callosum servers (see the crate docs and the README).

fn main() {
    eprintln!("callosum-loadgen: the load generator lands with the load generator issue");
    std::process::exit(2);
}
