//! Tokenizer compression: the normaliser chain and the raw id -> canonical id map.
//!
//! The reference (`CompressedTokenizer` in `engram_demo_v1.py`) decodes every token id to text,
//! normalises it with HuggingFace `tokenizers` normalisers and gives ids whose normalised text
//! (their *key*) is equal the same canonical id, numbered in order of first appearance. This module
//! reproduces the chain with no tokenizer library:
//!
//! 1. NFKC, then NFD;
//! 2. strip accents: drop every character of general category Mark (Mn, Mc, Me), which is what
//!    `tokenizers`' `StripAccents` removes;
//! 3. lowercase, character by character (`char::to_lowercase`, no context-sensitive rules);
//! 4. every run of `' '`, `'\t'`, `'\r'`, `'\n'` becomes one space;
//! 5. a text that is exactly one space is kept as one space; otherwise leading and trailing
//!    whitespace (Unicode `White_Space`) is stripped.
//!
//! A text that normalises to nothing keeps itself as its key, and a decoded text that contains
//! U+FFFD (a token that is not valid UTF-8 on its own) uses the raw token string instead.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// The reference protects a lone space from the strip step with this private-use sentinel and
/// turns every occurrence of it back into a space at the end (including any the text held).
const SENTINEL: char = '\u{E000}';

/// Applies the reference's normaliser chain (see the module documentation) to `text`.
pub fn normalize(text: &str) -> String {
    let nfkc: String = text.nfkc().collect();
    let mut collapsed = String::with_capacity(nfkc.len());
    let mut in_run = false;
    for c in nfkc.nfd().filter(|&c| !is_combining_mark(c)) {
        for lc in c.to_lowercase() {
            if matches!(lc, ' ' | '\t' | '\r' | '\n') {
                if !in_run {
                    collapsed.push(' ');
                }
                in_run = true;
            } else {
                collapsed.push(lc);
                in_run = false;
            }
        }
    }
    if collapsed == " " {
        collapsed.clear();
        collapsed.push(SENTINEL);
    }
    collapsed
        .trim_matches(char::is_whitespace)
        .chars()
        .map(|c| if c == SENTINEL { ' ' } else { c })
        .collect()
}

/// The key the reference groups a token under, given its decoded text and its raw token string.
pub fn token_key<'a>(decoded: &'a str, raw_token: &'a str) -> alloc::borrow::Cow<'a, str> {
    use alloc::borrow::Cow;
    if decoded.contains('\u{FFFD}') {
        return Cow::Borrowed(raw_token);
    }
    let norm = normalize(decoded);
    if norm.is_empty() {
        Cow::Borrowed(decoded)
    } else {
        Cow::Owned(norm)
    }
}

/// A surjective map from raw token ids onto canonical ids `0..num_canonical`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedVocab {
    lookup: Vec<u32>,
    num_canonical: u32,
    keys: Vec<String>,
}

impl CompressedVocab {
    /// Wraps an existing lookup table (for example one saved by `engram vocab --out`).
    ///
    /// The table must map onto `0..n` for some `n`, each canonical id used at least once.
    /// Canonical keys are unknown for such a table ([`Self::keys`] is empty).
    pub fn from_lookup(lookup: Vec<u32>) -> Result<Self> {
        let num_canonical = match lookup.iter().max() {
            None => 0,
            Some(&m) => m.checked_add(1).ok_or(Error::InvalidVocab {
                reason: "canonical id u32::MAX leaves no room for a count",
            })?,
        };
        if num_canonical as usize > lookup.len() {
            return Err(Error::InvalidVocab {
                reason: "more canonical ids than raw ids: the map cannot be onto",
            });
        }
        let mut used = alloc::vec![false; num_canonical as usize];
        for &c in &lookup {
            used[c as usize] = true;
        }
        if used.iter().any(|&u| !u) {
            return Err(Error::InvalidVocab {
                reason: "some canonical id below the largest one is never used",
            });
        }
        Ok(CompressedVocab {
            lookup,
            num_canonical,
            keys: Vec::new(),
        })
    }

    /// Raw token ids this map accepts.
    pub fn num_raw(&self) -> usize {
        self.lookup.len()
    }

    /// Number of canonical ids.
    pub fn num_canonical(&self) -> u32 {
        self.num_canonical
    }

    /// The whole table: `lookup()[raw] = canonical`.
    pub fn lookup(&self) -> &[u32] {
        &self.lookup
    }

    /// The normalised text of each canonical id, when the map was built from a tokenizer.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The canonical id of one raw id.
    pub fn canonical(&self, raw: u32) -> Result<u32> {
        self.lookup
            .get(raw as usize)
            .copied()
            .ok_or(Error::IdOutOfRange {
                position: 0,
                id: u64::from(raw),
                limit: self.lookup.len() as u64,
            })
    }

    /// Compresses `raw` into `out` (same length); fails on the first id out of range, leaving
    /// `out` untouched.
    pub fn compress(&self, raw: &[u32], out: &mut [u32]) -> Result<()> {
        crate::reference::compress_ids(&self.lookup, raw, out)
    }

    /// Canonical ids shared by more than one raw id, largest group first (ties by canonical id),
    /// each with its raw members in increasing order.
    pub fn merge_groups(&self) -> Vec<(u32, Vec<u32>)> {
        let mut members: Vec<Vec<u32>> = alloc::vec![Vec::new(); self.num_canonical as usize];
        for (raw, &c) in self.lookup.iter().enumerate() {
            members[c as usize].push(raw as u32);
        }
        let mut groups: Vec<(u32, Vec<u32>)> = members
            .into_iter()
            .enumerate()
            .filter(|(_, m)| m.len() > 1)
            .map(|(c, m)| (c as u32, m))
            .collect();
        groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        groups
    }
}

/// Builds a [`CompressedVocab`] from the tokens of a vocabulary, in raw id order.
#[derive(Debug, Default)]
pub struct CompressedVocabBuilder {
    key_to_id: BTreeMap<String, u32>,
    keys: Vec<String>,
    lookup: Vec<u32>,
}

impl CompressedVocabBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next raw id (`0, 1, 2, ...` in call order), given its decoded text and its raw
    /// token string; returns its canonical id.
    pub fn push(&mut self, decoded: &str, raw_token: &str) -> Result<u32> {
        let key = token_key(decoded, raw_token);
        if let Some(&id) = self.key_to_id.get(key.as_ref()) {
            self.lookup.push(id);
            return Ok(id);
        }
        let id = u32::try_from(self.keys.len()).map_err(|_| Error::Overflow {
            what: "canonical id",
        })?;
        let key = key.into_owned();
        self.key_to_id.insert(key.clone(), id);
        self.keys.push(key);
        self.lookup.push(id);
        Ok(id)
    }

    /// The finished map.
    pub fn finish(self) -> CompressedVocab {
        CompressedVocab {
            num_canonical: self.keys.len() as u32,
            lookup: self.lookup,
            keys: self.keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normaliser_chain_cases() {
        // Each expectation follows from the chain's definition, one step at a time.
        let cases = [
            ("Hello", "hello"),               // lowercase
            ("  Apple ", "apple"),            // strip
            (" ", " "),                       // a lone space is kept
            ("\t\n", " "),                    // whitespace run -> one space -> kept
            ("a \t\r\n b", "a b"),            // runs collapse to one space
            ("Café", "cafe"),                 // NFD + strip accents
            ("ﬁ", "fi"),                      // NFKC compatibility ligature
            ("Ｂｅｅ", "bee"),                // NFKC full-width letters
            ("\u{00A0}x", "x"),               // NFKC no-break space -> space -> stripped
            ("\u{3000}", " "),                // ideographic space -> space -> kept
            ("ΣΑΣ", "σασ"),                   // per-character lowercase: no final sigma
            ("İ", "i"),                       // U+0130 lowercases to i + U+0307, mark dropped
            ("x\u{E000}y", "x y"),            // the sentinel always becomes a space
            ("\u{0915}\u{093F}", "\u{0915}"), // Devanagari vowel sign (Mc) is a mark
            ("\u{000B}a\u{000B}", "a"),       // vertical tab: not collapsed, but stripped
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn keys_follow_the_reference_fallbacks() {
        assert_eq!(token_key(" Hello", "ĠHello"), "hello");
        assert_eq!(token_key("\u{FFFD}", "Ġâ"), "Ġâ");
        // A text that normalises to nothing keys as itself.
        assert_eq!(token_key("\u{0301}", "x"), "\u{0301}");
    }

    #[test]
    fn builder_numbers_keys_in_first_appearance_order() {
        let mut b = CompressedVocabBuilder::new();
        let ids: Vec<u32> = ["The", " the", "cat", "THE", "\u{FFFD}", "Cat "]
            .iter()
            .map(|t| b.push(t, "raw").unwrap())
            .collect();
        assert_eq!(ids, [0, 0, 1, 0, 2, 1]);
        let v = b.finish();
        assert_eq!(v.num_canonical(), 3);
        assert_eq!(v.keys(), ["the", "cat", "raw"]);
        assert_eq!(
            v.merge_groups(),
            [(0, alloc::vec![0, 1, 3]), (1, alloc::vec![2, 5])]
        );
        let mut out = [0; 3];
        v.compress(&[5, 4, 0], &mut out).unwrap();
        assert_eq!(out, [1, 2, 0]);
        let mut untouched = [7; 2];
        assert_eq!(
            v.compress(&[1, 6], &mut untouched),
            Err(Error::IdOutOfRange {
                position: 1,
                id: 6,
                limit: 6
            })
        );
        assert_eq!(untouched, [7, 7]);
    }

    #[test]
    fn from_lookup_checks_surjectivity() {
        assert_eq!(
            CompressedVocab::from_lookup(alloc::vec![0, 2, 1, 2])
                .unwrap()
                .num_canonical(),
            3
        );
        assert!(matches!(
            CompressedVocab::from_lookup(alloc::vec![0, 2]),
            Err(Error::InvalidVocab { .. })
        ));
        assert_eq!(
            CompressedVocab::from_lookup(Vec::new())
                .unwrap()
                .num_canonical(),
            0
        );
    }
}
