//! DHT messages (themis-dht's CBOR requests and responses) and the provider records they
//! carry: arbitrary bytes never panic; what decodes re-encodes to bytes that decode to the same
//! message, and a record that converts to a `ProviderRecord` converts back unchanged.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(e) = themis_dht::fuzz::fuzz_roundtrip(data) {
            panic!("dht: {e}");
        }
    });
}
