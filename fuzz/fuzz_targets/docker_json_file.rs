//! The json-file line decoder reads bytes a container's output and a torn
//! write can shape. Whatever the bytes: no panic, a line that does not
//! decode is left as it was (it is delivered raw), the text's range lies in
//! the line, the line is changed only before the range's end, and when
//! serde_json also reads the line as Docker's shape, both agree on the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::source::docker::decode_in_place;

#[derive(serde::Deserialize)]
struct Reference {
    log: String,
}

fuzz_target!(|data: &[u8]| {
    let mut line = data.to_vec();
    let Ok(decoded) = decode_in_place(&mut line) else {
        assert_eq!(line, data, "a line that does not decode is left as read");
        return;
    };
    assert!(decoded.log.start <= decoded.log.end);
    assert!(decoded.log.end <= line.len());
    let from = decoded.log.end + usize::from(!decoded.partial);
    assert_eq!(&line[from..], &data[from..], "bytes after the text are untouched");
    // serde_json refuses raw control characters, invalid UTF-8 and lone
    // surrogates, which the decoder passes through or maps to U+FFFD:
    // compare where serde_json accepts the line.
    if let Ok(reference) = serde_json::from_slice::<Reference>(data) {
        let mut expected = reference.log.into_bytes();
        if !decoded.partial {
            assert_eq!(expected.pop(), Some(b'\n'));
        }
        assert_eq!(&line[decoded.log.clone()], &expected[..]);
    }
});
