//! nap-sim. The driver arrives with its own issue; until then this binary
//! only names the protocol version it is built against.

fn main() {
    eprintln!(
        "nap-sim {} (protocol {}): not implemented yet",
        env!("CARGO_PKG_VERSION"),
        nap_core::PROTOCOL_VERSION
    );
    std::process::exit(2);
}
