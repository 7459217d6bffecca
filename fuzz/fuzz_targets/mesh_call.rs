//! The mesh's service call payloads (request after the protocol id, response) and node-info
//! answer (themis-mesh): arbitrary bytes never panic; what decodes re-encodes to bytes that
//! decode to the same value.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(e) = themis_mesh::fuzz::call_payloads(data) {
            panic!("mesh call: {e}");
        }
    });
}
