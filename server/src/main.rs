//! `callosum-server`: runs a Callosum server (see the crate docs and the README).

fn main() {
    eprintln!("callosum-server: the server binary lands with the thread-per-core server");
    std::process::exit(2);
}
