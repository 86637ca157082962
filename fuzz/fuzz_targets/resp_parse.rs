//! Both RESP parsers on arbitrary bytes, under the default limits and under tiny ones
//! (so the limit checks are reached). Neither may panic; a parse must consume at
//! least one byte and no more than it was given; a command re-encoded as an array of
//! bulk strings must parse back to itself; a reply re-encoded must parse to a value
//! with the same encoding. The same properties run on stable as proptests in
//! `src/resp.rs` (`arbitrary_bytes_are_handled`, `prefix_never_contradicts_whole`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ryu_server::resp::{Limits, encode_command, parse_command, parse_value};

/// Room for anything a parse under `Limits::default()` produced, re-encoded: an inline
/// argument may be longer than a bulk limit, a lossily decoded line longer than the
/// line limit.
const ROOMY: Limits = Limits {
    max_bulk_bytes: usize::MAX,
    max_array_len: usize::MAX,
    max_inline_bytes: usize::MAX,
};

const TINY: Limits = Limits {
    max_bulk_bytes: 8,
    max_array_len: 4,
    max_inline_bytes: 12,
};

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), TINY] {
        if let Ok(Some((args, consumed))) = parse_command(data, &limits) {
            assert!(1 <= consumed && consumed <= data.len());
            let mut encoded = Vec::new();
            encode_command(&args, &mut encoded);
            assert_eq!(
                parse_command(&encoded, &ROOMY),
                Ok(Some((args, encoded.len())))
            );
        }

        if let Ok(Some((value, consumed))) = parse_value(data, &limits) {
            assert!(1 <= consumed && consumed <= data.len());
            let encoded = value.to_bytes();
            let (reparsed, reconsumed) = parse_value(&encoded, &ROOMY)
                .expect("a re-encoded reply parses")
                .expect("a re-encoded reply is whole");
            assert_eq!(reconsumed, encoded.len());
            assert_eq!(reparsed.to_bytes(), encoded);
        }

        // A prefix never contradicts the whole buffer.
        let prefix = &data[..data.len() / 2];
        let command_prefix = parse_command(prefix, &limits);
        if command_prefix != Ok(None) {
            assert_eq!(command_prefix, parse_command(data, &limits));
        }
        let value_prefix = parse_value(prefix, &limits);
        if value_prefix != Ok(None) {
            assert_eq!(value_prefix, parse_value(data, &limits));
        }
    }
});
