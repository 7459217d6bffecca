//! Channel frames (themis-channel): the cleartext header parser, the endpoint's control
//! messages and the transport's frame check. Arbitrary bytes never panic; what parses
//! re-encodes to the same header or message.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(e) = themis_channel::fuzz::frame(data) {
            panic!("channel frame: {e}");
        }
    });
}
