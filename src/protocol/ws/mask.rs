//! Unmasking of client frame payloads (RFC 6455 §5.3).
//!
//! Every byte a client sends in a frame payload is XORed with one byte of a 4-byte key:
//! payload byte `i` uses key byte `i % 4`. A payload may arrive split across receive buffers,
//! so callers pass the position of `buf[0]` within the frame payload and the key is rotated
//! to match. Masking and unmasking are the same operation.
//!
//! Every inbound byte passes through here, so the fast path XORs eight bytes at a time; the
//! bytewise version is the reference it is tested against.

/// XORs `buf` with `mask` in place, where `buf[0]` is byte number `offset` of the frame
/// payload (RFC 6455 §5.3: `transformed[i] = original[i] ^ mask[i % 4]`).
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let key = rotate(mask, offset);
    // Eight payload bytes see the rotated key twice over. Native byte order on both sides
    // keeps each byte paired with the key byte at the same position.
    let key8 = [
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ];
    let key64 = u64::from_ne_bytes(key8);
    let (words, tail) = buf.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ key64).to_ne_bytes();
    }
    // The tail starts at a multiple of 8, hence of 4: the rotated key starts over.
    for (byte, k) in tail.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// The reference definition, one byte at a time: what [`apply_mask`] must equal.
pub fn apply_mask_bytewise(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= mask[(offset.wrapping_add(i)) % 4];
    }
}

/// The key as seen from payload position `offset`: key byte 0 applies to `buf[0]`.
fn rotate(mask: [u8; 4], offset: usize) -> [u8; 4] {
    let mut key = mask;
    key.rotate_left(offset % 4);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 6455 §5.7: a masked "Hello" with key 37 fa 21 3d.
    #[test]
    fn rfc_hello() {
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn split_payload_matches_whole() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let original: Vec<u8> = (0..=255).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, mask, 0);
        for split in 0..original.len() {
            let mut parts = original.clone();
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(parts, whole, "split at {split}");
        }
    }

    #[test]
    fn involution() {
        let mask = [1, 2, 3, 4];
        let mut buf = *b"masking twice gives the original back";
        apply_mask(&mut buf, mask, 3);
        apply_mask(&mut buf, mask, 3);
        assert_eq!(&buf, b"masking twice gives the original back");
    }

    #[test]
    fn empty_buffer() {
        let mut buf: [u8; 0] = [];
        apply_mask(&mut buf, [9, 9, 9, 9], 7);
    }

    proptest! {
        #[test]
        fn fast_equals_bytewise(
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            mask in any::<[u8; 4]>(),
            offset in any::<usize>(),
        ) {
            let mut fast = data.clone();
            let mut slow = data;
            apply_mask(&mut fast, mask, offset);
            apply_mask_bytewise(&mut slow, mask, offset);
            prop_assert_eq!(fast, slow);
        }
    }
}
