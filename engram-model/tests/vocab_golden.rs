//! The compressed vocabulary built from `tokenizer.json` against the reference's lookup table.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use std::path::PathBuf;

use engram_model::io::{read_vocab, write_vocab};
use engram_model::EngramTokenizer;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../conformance/golden")
        .join(name)
}

#[test]
fn deepseek_v3_lookup_matches_the_reference_element_for_element() {
    let tokenizer = EngramTokenizer::deepseek_v3().unwrap();
    assert_eq!(tokenizer.vocab_size(), 128_815);
    let built = tokenizer.compressed_vocab().unwrap();
    let expected = read_vocab(golden("vocab_deepseek_v3_lookup.safetensors")).unwrap();
    assert_eq!(built.num_canonical(), 98_627);
    let mismatches: Vec<(usize, u32, u32)> = built
        .lookup()
        .iter()
        .zip(expected.lookup())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, *a, *b))
        .take(20)
        .collect();
    assert!(
        mismatches.is_empty(),
        "first mismatches (raw, ours, reference): {mismatches:?}"
    );
    assert_eq!(built.lookup(), expected.lookup());
    // The paper's Table 6: the five largest merge groups.
    let sizes: Vec<usize> = built
        .merge_groups()
        .iter()
        .take(5)
        .map(|g| g.1.len())
        .collect();
    assert_eq!(sizes, [163, 54, 40, 35, 30]);
}

#[test]
fn written_lookup_reads_back_identically() {
    let tokenizer = EngramTokenizer::deepseek_v3().unwrap();
    let built = tokenizer.compressed_vocab().unwrap();
    let dir = std::env::temp_dir().join(format!("engram-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lookup.safetensors");
    write_vocab(&built, &path).unwrap();
    let back = read_vocab(&path).unwrap();
    assert_eq!(back.lookup(), built.lookup());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn encoding_the_public_texts_gives_the_reference_ids() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("engram_public.json")).unwrap())
            .unwrap();
    let file = std::fs::read(golden("engram_public.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&file).unwrap();
    let ids = tensors.tensor("input_ids").unwrap();
    let cols = ids.shape()[1];
    let raw: Vec<i64> = ids
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let tokenizer = EngramTokenizer::deepseek_v3().unwrap();
    for (row, text) in json["texts"].as_array().unwrap().iter().enumerate() {
        let got = tokenizer.encode(text.as_str().unwrap()).unwrap();
        let expected: Vec<u32> = raw[row * cols..(row + 1) * cols]
            .iter()
            .map(|&x| x as u32)
            .collect();
        // Rows are right-padded with raw id 1 to the longest text.
        assert_eq!(&expected[..got.len()], got.as_slice(), "text {row}");
        assert!(expected[got.len()..].iter().all(|&x| x == 1));
    }
}
