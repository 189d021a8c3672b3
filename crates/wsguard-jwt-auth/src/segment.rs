//! Decoding a segment of a compact JWS (RFC 7515 §7.1): base64url without padding (RFC 7515
//! §2, "Base64url Encoding"), into a buffer on the stack when it fits.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

/// Decodes the base64url `encoded` segment into `stack` when it fits (`N` bytes), else into
/// `heap`; `None` for a segment that is not base64url without padding (trailing bits set
/// included: a second spelling of the same bytes).
pub(crate) fn decode<'b, const N: usize>(
    encoded: &str,
    stack: &'b mut [u8; N],
    heap: &'b mut Vec<u8>,
) -> Option<&'b [u8]> {
    // Every 4 characters decode to at most 3 bytes.
    if encoded.len() <= N / 3 * 4 {
        let len = URL_SAFE_NO_PAD.decode_slice(encoded, stack).ok()?;
        stack.get(..len)
    } else {
        heap.clear();
        URL_SAFE_NO_PAD.decode_vec(encoded, heap).ok()?;
        Some(heap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes on both sides of the stack buffer's size, and what is not base64url
    /// refused on both.
    fn round_trips<const N: usize>(lengths: &[usize]) {
        let (mut stack, mut heap) = ([0; N], Vec::new());
        for &len in lengths {
            let bytes = "x".repeat(len);
            let encoded = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                decode(&encoded, &mut stack, &mut heap),
                Some(bytes.as_bytes()),
                "N = {N}, {len} bytes"
            );
        }
        let long_bad = format!("{}e31", "A".repeat(4 * N));
        for bad in ["e30=", "e30+", "e31", "x", &long_bad] {
            assert_eq!(decode(bad, &mut stack, &mut heap), None, "N = {N}, {bad}");
        }
    }

    #[test]
    fn segments_decode_on_the_stack_and_on_the_heap() {
        // The stack takes up to N / 3 * 4 characters: 1364 (1023 bytes) for 1024, 256
        // (192 bytes) for 192.
        round_trips::<1024>(&[0, 1, 767, 768, 769, 1022, 1023, 1024, 1025, 5000]);
        round_trips::<192>(&[1, 191, 192, 193, 1000]);
    }
}
