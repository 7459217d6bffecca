//! Handshake messages 1, 2 and 3 (themis-handshake's parsers and `peek`): arbitrary bytes never
//! panic, and a message that parses rebuilds to the same bytes and is routed as what it is.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(e) = themis_handshake::fuzz::roundtrip(data) {
            panic!("handshake: {e}");
        }
    });
}
