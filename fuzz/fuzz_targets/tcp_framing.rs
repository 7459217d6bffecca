//! The TCP transport's length-prefix framing (themis-channel): `data[0]` is the frame size
//! limit / 16, `data[1]` the read size - 1, the rest the byte stream. Read incrementally, the
//! stream yields the frames a one-shot parse finds (never one above the limit), and the hello
//! frames among them round-trip.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Err(e) = themis_channel::fuzz::tcp_stream(data) {
            panic!("tcp framing: {e}");
        }
    });
}
