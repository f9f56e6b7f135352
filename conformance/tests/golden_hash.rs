//! The hash against the official reference: multipliers, prime chains and per-position rows.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use engram_conformance::golden::{golden_dir, read_json, HashParams};
use engram_core::hash::{layer_multipliers, prime_tables};
use engram_core::{CompressedVocab, EngramConfig, NgramHasher, TensorSource};
use engram_model::SafetensorsFile;

fn hash_params() -> HashParams {
    read_json(golden_dir().join("hash_params.json")).unwrap()
}

#[test]
fn all_320_multiplier_rows_match_numpy() {
    let params = hash_params();
    assert_eq!(params.multipliers.len(), 320);
    for row in &params.multipliers {
        let got =
            layer_multipliers(row.compressed_vocab, row.seed, row.layer_id, row.max_ngram).unwrap();
        assert_eq!(got, row.multipliers, "row {row:?}");
    }
}

#[test]
fn prime_chains_match_the_reference() {
    for case in hash_params().prime_tables {
        let config = EngramConfig {
            engram_vocab_size: case.engram_vocab_size.clone(),
            max_ngram_size: case.engram_vocab_size.len() + 1,
            n_embed_per_ngram: case.n_head,
            n_head_per_ngram: case.n_head,
            layer_ids: case.layer_ids.clone(),
            pad_id: 0,
            seed: 0,
            kernel_size: 4,
            hidden_size: 8,
            hc_mult: 1,
            short_conv: true,
        };
        let got = prime_tables(&config).unwrap();
        for (layer, tables) in case.layer_ids.iter().zip(got) {
            assert_eq!(tables, case.primes[&layer.to_string()], "layer {layer}");
        }
    }
}

struct PublicEngram {
    config: EngramConfig,
    json: serde_json::Value,
    file: SafetensorsFile,
}

fn public_engram() -> PublicEngram {
    let dir = golden_dir();
    PublicEngram {
        config: read_json(dir.join("engram_public.json")).unwrap(),
        json: read_json(dir.join("engram_public.json")).unwrap(),
        file: SafetensorsFile::open(dir.join("engram_public.safetensors")).unwrap(),
    }
}

fn as_u32(v: &[i64]) -> Vec<u32> {
    v.iter().map(|&x| u32::try_from(x).unwrap()).collect()
}

#[test]
fn public_config_loads_as_it_is_and_derives_its_table_sizes() {
    let p = public_engram();
    assert_eq!(p.config.hidden_size, 64);
    assert_eq!(p.config.hc_mult, 4);
    let vocab = p.json["compressed_vocab_size"].as_u64().unwrap();
    let pad = p.json["compressed_pad_id"].as_u64().unwrap() as u32;
    let hasher = NgramHasher::new(&p.config, vocab, pad).unwrap();
    for layer in hasher.layers() {
        let key = layer.layer_id.to_string();
        let expected: Vec<u32> = p.json["table_sizes"][&key]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|order| order.as_array().unwrap().iter())
            .map(|p| p.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(layer.table_sizes, expected, "layer {key}");
        let mult: Vec<u64> = p.json["multipliers"][&key]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_u64().unwrap())
            .collect();
        assert_eq!(layer.multipliers, mult);
        let tensor = p.file.read_i64(&format!("multipliers.layer{key}")).unwrap();
        assert_eq!(
            layer.multipliers,
            tensor.iter().map(|&m| m as u64).collect::<Vec<_>>()
        );
    }
    // The concatenated table of layer 1 starts each head at the golden offsets.
    let offsets = p
        .file
        .read_i64("weights.multi_head_embedding.offsets")
        .unwrap();
    let layer1 = hasher.layer(1).unwrap();
    assert_eq!(
        layer1.offsets,
        offsets.iter().map(|&o| o as u64).collect::<Vec<_>>()
    );
    let shape = p
        .file
        .shape("weights.multi_head_embedding.embedding.weight")
        .unwrap();
    assert_eq!(shape[0] as u64, layer1.total_rows());
}

#[test]
fn compressed_ids_are_the_lookup_of_the_raw_ids() {
    let p = public_engram();
    let lookup = SafetensorsFile::open(golden_dir().join("vocab_deepseek_v3_lookup.safetensors"))
        .unwrap()
        .read_i64("lookup")
        .unwrap();
    let vocab = CompressedVocab::from_lookup(as_u32(&lookup)).unwrap();
    assert_eq!(vocab.num_canonical(), 98_627);
    let raw = as_u32(&p.file.read_i64("input_ids").unwrap());
    let expected = as_u32(&p.file.read_i64("compressed_ids").unwrap());
    let mut got = vec![0; raw.len()];
    vocab.compress(&raw, &mut got).unwrap();
    assert_eq!(got, expected);
}

#[test]
fn hash_rows_match_every_position_of_both_layers() {
    let p = public_engram();
    let shape = p.file.shape("compressed_ids").unwrap();
    let (batch, seq) = (shape[0], shape[1]);
    let compressed = as_u32(&p.file.read_i64("compressed_ids").unwrap());
    // Each padded row of the golden batch is one sequence.
    let cu_seqlens: Vec<u32> = (0..=batch).map(|b| (b * seq) as u32).collect();
    let hasher = NgramHasher::new(&p.config, 98_627, 2).unwrap();
    let all = hasher.hash_all_layers(&compressed, &cu_seqlens).unwrap();
    for (layer, rows) in hasher.layers().iter().zip(&all) {
        let name = format!("hash_ids.layer{}", layer.layer_id);
        assert_eq!(
            p.file.shape(&name).unwrap(),
            [batch, seq, hasher.heads_per_position()]
        );
        let expected = p.file.read_i64(&name).unwrap();
        assert_eq!(rows, &as_u32(&expected), "layer {}", layer.layer_id);
        // The single-layer entry point agrees with the one-pass one.
        let mut one = vec![0; rows.len()];
        hasher
            .hash_layer(layer.layer_id, &compressed, &cu_seqlens, &mut one)
            .unwrap();
        assert_eq!(&one, rows);
    }
}
