//! The bounded pre-scan: nesting depth and string length, before any parsing.
//!
//! A single pass over the bytes that tracks whether it is inside a string (and after a
//! backslash), counting the nesting of `[` and `{` outside strings and the raw length of
//! each string (keys included, escapes counted as written). It allocates nothing and never
//! fails on malformed input: what is not JSON is left to the parser, which the message only
//! reaches once its depth and strings are within bounds.

/// The limits a message must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Deepest nesting of arrays and objects (`[]` is 1, a bare scalar 0).
    pub(crate) max_depth: usize,
    /// Longest string, in raw bytes between its quotes.
    pub(crate) max_string_len: usize,
}

/// Which limit a message broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Depth,
    StringLength,
}

impl Exceeded {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Depth => "nesting_depth",
            Self::StringLength => "string_length",
        }
    }
}

/// Checks `json` against `limits`, stopping at the first byte that breaks one.
pub(crate) fn check(json: &[u8], limits: &Limits) -> Result<(), Exceeded> {
    // The usual message is far within both limits, which two bounds prove without the
    // scan: no string is longer than the whole message, and no nesting deeper than its
    // count of opening brackets (a count the compiler vectorises).
    if json.len() <= limits.max_string_len && openers(json) <= limits.max_depth {
        return Ok(());
    }
    scan(json, limits)
}

/// How many `[` and `{` bytes `json` holds, inside strings or not.
fn openers(json: &[u8]) -> usize {
    // `[` is 0x5B and `{` 0x7B: they differ in bit 0x20 only, and no other byte sets the
    // rest, so one comparison finds both. Counted in bytes over chunks of at most 255 (no
    // overflow), which the compiler turns into one vector addition per 16 bytes.
    json.chunks(usize::from(u8::MAX))
        .map(|chunk| {
            let n = chunk
                .iter()
                .fold(0u8, |n, &byte| n + u8::from(byte | 0x20 == b'{'));
            usize::from(n)
        })
        .sum()
}

/// The scan itself.
fn scan(json: &[u8], limits: &Limits) -> Result<(), Exceeded> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_len = 0usize;
    for &byte in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
                continue;
            }
            string_len += 1;
            if string_len > limits.max_string_len {
                return Err(Exceeded::StringLength);
            }
        } else {
            match byte {
                b'"' => {
                    in_string = true;
                    string_len = 0;
                }
                b'[' | b'{' => {
                    depth += 1;
                    if depth > limits.max_depth {
                        return Err(Exceeded::Depth);
                    }
                }
                // Unbalanced closers are the parser's business.
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    const fn limits(max_depth: usize, max_string_len: usize) -> Limits {
        Limits {
            max_depth,
            max_string_len,
        }
    }

    /// (source, input, depth limit, string limit, expected)
    type Case = (&'static str, String, usize, usize, Result<(), Exceeded>);

    fn cases() -> Vec<Case> {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        vec![
            // JSONTestSuite (nst/JSONTestSuite, test_parsing/): structures.
            ("y_array_empty.json", "[]".into(), 1, 8, Ok(())),
            ("y_array_empty.json, depth 0", "[]".into(), 0, 8, Err(Exceeded::Depth)),
            ("y_structure_lonely_string.json", r#""asd""#.into(), 0, 3, Ok(())),
            ("y_structure_lonely_string.json, short limit", r#""asd""#.into(), 0, 2, Err(Exceeded::StringLength)),
            ("y_structure_lonely_int.json", "42".into(), 0, 0, Ok(())),
            ("i_structure_500_nested_arrays.json", deep(500), 500, 0, Ok(())),
            ("i_structure_500_nested_arrays.json, limit 499", deep(500), 499, 0, Err(Exceeded::Depth)),
            ("n_structure_100000_opening_arrays.json", "[".repeat(100_000), 32, 0, Err(Exceeded::Depth)),
            ("n_structure_open_array_object.json", r#"[{"":"#.repeat(50_000), 32, 8, Err(Exceeded::Depth)),
            ("n_structure_unclosed_array.json", "[1".into(), 1, 0, Ok(())),
            ("n_structure_close_unopened_array.json", "1]".into(), 0, 0, Ok(())),
            ("n_structure_object_with_trailing_garbage.json", r#"{"a": true} "x""#.into(), 1, 1, Ok(())),
            // Strings: escapes, brackets and quotes inside them.
            ("y_string_allowed_escapes.json", r#"["\"\\\/\b\f\n\r\t"]"#.into(), 1, 16, Ok(())),
            ("y_string_allowed_escapes.json, limit 15", r#"["\"\\\/\b\f\n\r\t"]"#.into(), 1, 15, Err(Exceeded::StringLength)),
            ("y_string_escaped_control_character.json", r#"["\u0012"]"#.into(), 1, 6, Ok(())),
            ("y_string_backslash_and_u_escaped_zero.json", r#"["\\u0000"]"#.into(), 1, 7, Ok(())),
            ("y_object_escaped_null_in_key.json", r#"{"foo\u0000bar": 42}"#.into(), 1, 12, Ok(())),
            ("y_object_escaped_null_in_key.json, key too long", r#"{"foo\u0000bar": 42}"#.into(), 1, 11, Err(Exceeded::StringLength)),
            ("n_string_unescaped_newline.json", "[\"new\nline\"]".into(), 1, 8, Ok(())),
            ("n_string_single_doublequote.json", r#"""#.into(), 0, 0, Ok(())),
            ("n_structure_unclosed_string (brackets inside are text)", r#"["[[[[[[[[["#.into(), 1, 10, Ok(())),
            // Ours: an escaped quote does not end a string, an escaped backslash does not
            // escape the quote after it.
            ("escaped quote keeps the string open", r#"["a\"[[[["]"#.into(), 1, 8, Ok(())),
            ("escaped backslash closes", r#"["a\\"[[[["]"#.into(), 1, 8, Err(Exceeded::Depth)),
            ("multi-byte UTF-8 counts bytes", r#"["ééé"]"#.into(), 1, 6, Ok(())),
            ("multi-byte UTF-8 counts bytes, limit 5", r#"["ééé"]"#.into(), 1, 5, Err(Exceeded::StringLength)),
            // RFC 8259 section 13, the first example (an object three levels deep).
            (
                "RFC 8259 section 13, Image",
                r#"{"Image": {"Width": 800, "Height": 600, "Title": "View from 15th Floor",
                   "Thumbnail": {"Url": "http://www.example.com/image/481989943",
                   "Height": 125, "Width": 100}, "Animated" : false, "IDs": [116, 943, 234, 38793]}}"#
                    .into(),
                3,
                38,
                Ok(()),
            ),
            ("RFC 8259 section 13, Image, depth 2", r#"{"Image": {"Thumbnail": {}}}"#.into(), 2, 38, Err(Exceeded::Depth)),
            // The issue's cases: 10,000-deep nesting, a 1 MiB string under a 64 KiB limit.
            ("10,000-deep nesting", deep(10_000), 32, 65_536, Err(Exceeded::Depth)),
            (
                "1 MiB string, 64 KiB limit",
                format!(r#"{{"type":"ping","x":"{}"}}"#, "a".repeat(1 << 20)),
                32,
                65_536,
                Err(Exceeded::StringLength),
            ),
        ]
    }

    #[test]
    fn case_table() {
        for (source, input, max_depth, max_string_len, expected) in cases() {
            assert_eq!(
                check(input.as_bytes(), &limits(max_depth, max_string_len)),
                expected,
                "{source}"
            );
        }
    }

    /// The nesting depth of a value: `[]` is 1, a scalar 0.
    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The longest string (keys included), in bytes as serialized (escapes included).
    fn longest_string(value: &Value) -> usize {
        let raw = |s: &str| serde_json::to_string(s).unwrap().len() - 2;
        match value {
            Value::String(s) => raw(s),
            Value::Array(items) => items.iter().map(longest_string).max().unwrap_or(0),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| raw(k).max(longest_string(v)))
                .max()
                .unwrap_or(0),
            _ => 0,
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            // Any text: quotes, backslashes, brackets, control characters, non-ASCII.
            any::<String>().prop_map(Value::String),
            "[\\[\\]{}\"\\\\a]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(8, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = check(&bytes, &limits(4, 16));
        }

        /// The shortcut only answers what the scan would: on JSON-like bytes and on noise,
        /// with limits around the input's size.
        #[test]
        fn the_shortcut_agrees_with_the_scan(
            bytes in prop::collection::vec(
                prop_oneof![
                    Just(b'['), Just(b'{'), Just(b']'), Just(b'}'), Just(b'"'), Just(b'\\'),
                    Just(b'a'), Just(b','), any::<u8>(),
                ],
                0..96,
            ),
            max_depth in 0usize..40,
            max_string_len in 0usize..100,
        ) {
            let limits = limits(max_depth, max_string_len);
            prop_assert_eq!(check(&bytes, &limits), scan(&bytes, &limits));
        }

        #[test]
        fn agrees_with_the_parsed_value(value in json(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            let (d, s) = (depth(&value), longest_string(&value));
            // Passes with the value's own depth and longest string...
            prop_assert_eq!(check(text.as_bytes(), &limits(d, s)), Ok(()));
            // ...and fails with one less of either.
            if d > 0 {
                prop_assert_eq!(check(text.as_bytes(), &limits(d - 1, s)), Err(Exceeded::Depth));
            }
            if s > 0 {
                prop_assert_eq!(
                    check(text.as_bytes(), &limits(d, s - 1)),
                    Err(Exceeded::StringLength)
                );
            }
        }

        #[test]
        fn what_passes_parses_without_hitting_serde_limits(bytes in prop::collection::vec(
            prop_oneof![Just(b'['), Just(b']'), Just(b'{'), Just(b'}'), Just(b'"'), Just(b'\\'), Just(b','), Just(b':'), Just(b'1')],
            0..400,
        )) {
            // serde_json refuses more than 128 levels with an error; the scan, at 32,
            // never lets such input through.
            if check(&bytes, &limits(32, 64)).is_ok() {
                if let Err(err) = serde_json::from_slice::<Value>(&bytes) {
                    prop_assert!(!err.to_string().contains("recursion limit"));
                }
            }
        }
    }
}
