//! Layer configuration, validated wherever it enters the library.
//!
//! [`EngramConfig`] holds every field of the reference `EngramConfig` plus the two backbone values
//! the layer needs (`hidden_size`, `hc_mult`). It deserialises from either a flat JSON object or the
//! golden files' nested form (`{"engram": {...}, "backbone": {...}}`, other keys ignored), and
//! deserialisation validates: a config that loads is a config every kernel accepts.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Configuration of the Engram layers of one model.
///
/// Field names and meanings follow the reference (`engram_demo_v1.py`):
/// orders `n = 2..=max_ngram_size`, `n_head_per_ngram` hash heads per order, each head an embedding
/// table of `n_embed_per_ngram / n_head_per_ngram` columns whose row count is a prime at least
/// `engram_vocab_size[n - 2]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct EngramConfig {
    /// Minimum table size per order (`len == max_ngram_size - 1`); each head's table has the next
    /// unused prime number of rows at or above it.
    pub engram_vocab_size: Vec<u64>,
    /// Largest N-gram order N (at least 2).
    pub max_ngram_size: usize,
    /// Embedding width per order, split evenly over the heads.
    pub n_embed_per_ngram: usize,
    /// Hash heads per order (K).
    pub n_head_per_ngram: usize,
    /// Backbone layers that carry an Engram module, in the order their primes are drawn.
    pub layer_ids: Vec<u32>,
    /// Raw token id used to pad the left context (compressed before use).
    pub pad_id: u32,
    /// Seed of the multipliers; layer `l` uses `seed + 10007 * l`.
    pub seed: u64,
    /// Kernel width of the short depthwise causal convolution.
    pub kernel_size: usize,
    /// Hidden size `d` of the backbone.
    pub hidden_size: usize,
    /// Number of residual branches M (hyper-connection multiplicity).
    pub hc_mult: usize,
    /// Whether the layer ends with the short convolution (`y = u + SiLU(conv(RMSNorm(u)))`). The
    /// reference demo has one; DeepSeek-V4.1's Engram has none (`y = u`). Defaults to `true`.
    pub short_conv: bool,
}

impl EngramConfig {
    /// The configuration of the official demo (`engram_demo_v1.py`): DeepSeek-V3 vocabulary,
    /// `engram_vocab_size = [129280 * 5; 2]`, N = 3, 8 heads of 64 columns per order, layers 1
    /// and 15, hidden size 1024, M = 4, kernel 4.
    pub fn demo() -> Self {
        EngramConfig {
            engram_vocab_size: alloc::vec![129_280 * 5, 129_280 * 5],
            max_ngram_size: 3,
            n_embed_per_ngram: 512,
            n_head_per_ngram: 8,
            layer_ids: alloc::vec![1, 15],
            pad_id: 2,
            seed: 0,
            kernel_size: 4,
            hidden_size: 1024,
            hc_mult: 4,
            short_conv: true,
        }
    }

    /// Checks every field and every relation between fields.
    pub fn validate(&self) -> Result<()> {
        fn bad(field: &'static str, reason: &'static str) -> Result<()> {
            Err(Error::InvalidConfig { field, reason })
        }
        if self.max_ngram_size < 2 {
            return bad("max_ngram_size", "must be at least 2");
        }
        if self.max_ngram_size > 64 {
            return bad("max_ngram_size", "must be at most 64");
        }
        if self.engram_vocab_size.len() != self.max_ngram_size - 1 {
            return bad(
                "engram_vocab_size",
                "must have one entry per order 2..=max_ngram_size",
            );
        }
        if self.engram_vocab_size.contains(&0) {
            return bad("engram_vocab_size", "entries must be at least 1");
        }
        if self
            .engram_vocab_size
            .iter()
            .any(|&v| v > u64::from(u32::MAX))
        {
            return bad(
                "engram_vocab_size",
                "entries must be below 2^32 (table rows are u32)",
            );
        }
        if self.n_head_per_ngram == 0 {
            return bad("n_head_per_ngram", "must be at least 1");
        }
        if self.n_embed_per_ngram == 0 {
            return bad("n_embed_per_ngram", "must be at least 1");
        }
        if self.n_embed_per_ngram % self.n_head_per_ngram != 0 {
            return bad(
                "n_embed_per_ngram",
                "must be a multiple of n_head_per_ngram",
            );
        }
        if self.layer_ids.is_empty() {
            return bad("layer_ids", "must name at least one layer");
        }
        for (i, a) in self.layer_ids.iter().enumerate() {
            if self.layer_ids[..i].contains(a) {
                return bad("layer_ids", "must not repeat a layer");
            }
        }
        if self.kernel_size == 0 {
            return bad("kernel_size", "must be at least 1");
        }
        if self.hidden_size == 0 {
            return bad("hidden_size", "must be at least 1");
        }
        if self.hc_mult == 0 {
            return bad("hc_mult", "must be at least 1");
        }
        Ok(())
    }

    /// Number of hash heads over all orders: `(N - 1) * K`.
    pub fn num_heads(&self) -> usize {
        (self.max_ngram_size - 1) * self.n_head_per_ngram
    }

    /// Columns of one head's table: `n_embed_per_ngram / n_head_per_ngram`.
    pub fn d_head(&self) -> usize {
        self.n_embed_per_ngram / self.n_head_per_ngram
    }

    /// Width of the gathered memory vector `e`: `(N - 1) * n_embed_per_ngram`.
    pub fn d_mem(&self) -> usize {
        (self.max_ngram_size - 1) * self.n_embed_per_ngram
    }
}

/// The accepted JSON shapes: every field may stand at the top level or inside an `engram` /
/// `backbone` object (the golden files' layout). Unknown keys are ignored.
#[derive(Deserialize, Default)]
#[serde(expecting = "a JSON object with the Engram config fields")]
struct RawConfig {
    #[serde(flatten)]
    top: RawFields,
    engram: Option<RawFields>,
    backbone: Option<RawFields>,
}

#[derive(Deserialize, Default)]
struct RawFields {
    engram_vocab_size: Option<Vec<u64>>,
    max_ngram_size: Option<usize>,
    n_embed_per_ngram: Option<usize>,
    n_head_per_ngram: Option<usize>,
    layer_ids: Option<Vec<u32>>,
    pad_id: Option<u32>,
    seed: Option<u64>,
    kernel_size: Option<usize>,
    hidden_size: Option<usize>,
    hc_mult: Option<usize>,
    short_conv: Option<bool>,
}

impl TryFrom<RawConfig> for EngramConfig {
    type Error = Error;

    fn try_from(raw: RawConfig) -> Result<Self> {
        let RawConfig {
            top,
            engram,
            backbone,
        } = raw;
        let engram = engram.unwrap_or_default();
        let backbone = backbone.unwrap_or_default();
        macro_rules! take {
            ($f:ident) => {
                engram
                    .$f
                    .or(backbone.$f)
                    .or(top.$f)
                    .ok_or(Error::InvalidConfig {
                        field: stringify!($f),
                        reason: "is missing",
                    })?
            };
        }
        let config = EngramConfig {
            engram_vocab_size: take!(engram_vocab_size),
            max_ngram_size: take!(max_ngram_size),
            n_embed_per_ngram: take!(n_embed_per_ngram),
            n_head_per_ngram: take!(n_head_per_ngram),
            layer_ids: take!(layer_ids),
            pad_id: take!(pad_id),
            seed: take!(seed),
            kernel_size: take!(kernel_size),
            hidden_size: take!(hidden_size),
            hc_mult: take!(hc_mult),
            short_conv: engram
                .short_conv
                .or(backbone.short_conv)
                .or(top.short_conv)
                .unwrap_or(true),
        };
        config.validate()?;
        Ok(config)
    }
}

/// How the MoE gate turns logits into scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreFunc {
    /// `softmax` over the experts (computed in f32 or wider).
    Softmax,
    /// Element-wise `sigmoid`; route weights are renormalised to sum to one.
    Sigmoid,
}

/// Configuration of a DeepSeek-V3 MoE layer (`Gate`, `Expert`, `MLP`, `MoE` of the reference
/// `inference/model.py`), validated on construction and deserialisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawMoeConfig")]
pub struct MoeConfig {
    /// Model width.
    pub dim: usize,
    /// Hidden width of one routed expert.
    pub moe_inter_dim: usize,
    /// Number of routed experts E.
    pub n_routed_experts: usize,
    /// Shared experts, fused into one MLP of width `n_shared_experts * moe_inter_dim` (0: none).
    pub n_shared_experts: usize,
    /// Experts each token is routed to (top-k).
    pub n_activated_experts: usize,
    /// Expert groups for group-limited routing (1: no grouping).
    pub n_expert_groups: usize,
    /// Groups each token may route into.
    pub n_limited_groups: usize,
    /// Factor applied to the route weights.
    pub route_scale: f64,
    /// Softmax or sigmoid scores.
    pub score_func: ScoreFunc,
    /// Whether the gate has a selection bias (`gate.bias`, used to choose experts, not to weight them).
    pub bias: bool,
}

#[derive(Deserialize)]
#[serde(expecting = "a JSON object with the MoE config fields")]
struct RawMoeConfig {
    dim: usize,
    moe_inter_dim: usize,
    n_routed_experts: usize,
    #[serde(default)]
    n_shared_experts: usize,
    n_activated_experts: usize,
    #[serde(default = "one")]
    n_expert_groups: usize,
    #[serde(default = "one")]
    n_limited_groups: usize,
    #[serde(default = "one_f64")]
    route_scale: f64,
    score_func: ScoreFunc,
    #[serde(default)]
    bias: bool,
}

fn one() -> usize {
    1
}

fn one_f64() -> f64 {
    1.0
}

impl TryFrom<RawMoeConfig> for MoeConfig {
    type Error = Error;

    fn try_from(r: RawMoeConfig) -> Result<Self> {
        let c = MoeConfig {
            dim: r.dim,
            moe_inter_dim: r.moe_inter_dim,
            n_routed_experts: r.n_routed_experts,
            n_shared_experts: r.n_shared_experts,
            n_activated_experts: r.n_activated_experts,
            n_expert_groups: r.n_expert_groups,
            n_limited_groups: r.n_limited_groups,
            route_scale: r.route_scale,
            score_func: r.score_func,
            bias: r.bias,
        };
        c.validate()?;
        Ok(c)
    }
}

impl MoeConfig {
    /// Checks every field and every relation between fields.
    pub fn validate(&self) -> Result<()> {
        fn bad(field: &'static str, reason: &'static str) -> Result<()> {
            Err(Error::InvalidConfig { field, reason })
        }
        if self.dim == 0 {
            return bad("dim", "must be at least 1");
        }
        if self.moe_inter_dim == 0 {
            return bad("moe_inter_dim", "must be at least 1");
        }
        if self.n_routed_experts == 0 {
            return bad("n_routed_experts", "must be at least 1");
        }
        if self.n_activated_experts == 0 || self.n_activated_experts > self.n_routed_experts {
            return bad(
                "n_activated_experts",
                "must be between 1 and n_routed_experts",
            );
        }
        if self.n_expert_groups == 0 || self.n_routed_experts % self.n_expert_groups != 0 {
            return bad(
                "n_expert_groups",
                "must be at least 1 and divide n_routed_experts",
            );
        }
        if self.n_limited_groups == 0 || self.n_limited_groups > self.n_expert_groups {
            return bad("n_limited_groups", "must be between 1 and n_expert_groups");
        }
        let per_group = self.n_routed_experts / self.n_expert_groups;
        if self.n_activated_experts > self.n_limited_groups * per_group {
            return bad(
                "n_activated_experts",
                "must not exceed the experts of the n_limited_groups kept groups",
            );
        }
        if self.bias && self.n_expert_groups > 1 && per_group < 2 {
            return bad(
                "n_expert_groups",
                "with a bias, each group needs two experts (its score is the sum of its best two)",
            );
        }
        if !self.route_scale.is_finite() {
            return bad("route_scale", "must be finite");
        }
        Ok(())
    }

    /// Experts per group.
    pub fn experts_per_group(&self) -> usize {
        self.n_routed_experts / self.n_expert_groups
    }

    /// Hidden width of the fused shared-expert MLP.
    pub fn shared_inter_dim(&self) -> usize {
        self.n_shared_experts * self.moe_inter_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid_and_has_reference_widths() {
        let c = EngramConfig::demo();
        c.validate().unwrap();
        assert_eq!(c.num_heads(), 16);
        assert_eq!(c.d_head(), 64);
        assert_eq!(c.d_mem(), 1024);
    }

    #[test]
    fn loads_flat_json() {
        let json = r#"{"engram_vocab_size":[10,10,10],"max_ngram_size":4,"n_embed_per_ngram":8,
            "n_head_per_ngram":4,"layer_ids":[0,1],"pad_id":2,"seed":7,"kernel_size":4,
            "hidden_size":16,"hc_mult":1,"comment":"ignored"}"#;
        let c: EngramConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.max_ngram_size, 4);
        assert_eq!(c.d_head(), 2);
    }

    #[test]
    fn every_inconsistency_is_a_typed_error() {
        let base = EngramConfig::demo();
        type Mutation = fn(&mut EngramConfig);
        let cases: [(Mutation, &str); 11] = [
            (|c| c.max_ngram_size = 1, "max_ngram_size"),
            (|c| c.engram_vocab_size.push(5), "engram_vocab_size"),
            (|c| c.engram_vocab_size[0] = 0, "engram_vocab_size"),
            (|c| c.engram_vocab_size[1] = 1 << 33, "engram_vocab_size"),
            (|c| c.n_head_per_ngram = 0, "n_head_per_ngram"),
            (|c| c.n_embed_per_ngram = 500, "n_embed_per_ngram"),
            (|c| c.layer_ids.clear(), "layer_ids"),
            (|c| c.layer_ids = alloc::vec![3, 3], "layer_ids"),
            (|c| c.kernel_size = 0, "kernel_size"),
            (|c| c.hidden_size = 0, "hidden_size"),
            (|c| c.hc_mult = 0, "hc_mult"),
        ];
        for (mutate, field) in cases {
            let mut c = base.clone();
            mutate(&mut c);
            match c.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected InvalidConfig for {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn short_conv_defaults_to_on_and_can_be_turned_off() {
        let base = r#"{"engram_vocab_size":[10],"max_ngram_size":2,"n_embed_per_ngram":8,
            "n_head_per_ngram":4,"layer_ids":[0],"pad_id":2,"seed":0,"kernel_size":4,
            "hidden_size":16,"hc_mult":1"#;
        let on: EngramConfig = serde_json::from_str(&alloc::format!("{base}}}")).unwrap();
        assert!(on.short_conv);
        let off: EngramConfig =
            serde_json::from_str(&alloc::format!("{base},\"short_conv\":false}}")).unwrap();
        assert!(!off.short_conv);
    }

    #[test]
    fn moe_config_validates_routing_relations() {
        let ok = r#"{"dim":64,"moe_inter_dim":32,"n_routed_experts":16,"n_shared_experts":1,
            "n_activated_experts":4,"n_expert_groups":4,"n_limited_groups":2,"route_scale":2.5,
            "score_func":"sigmoid","bias":true,"name":"ignored"}"#;
        let c: MoeConfig = serde_json::from_str(ok).unwrap();
        assert_eq!(c.experts_per_group(), 4);
        type Mutation = fn(&mut MoeConfig);
        let mutations: [(Mutation, &str); 6] = [
            (|c| c.n_activated_experts = 17, "n_activated_experts"),
            (|c| c.n_expert_groups = 3, "n_expert_groups"),
            (|c| c.n_limited_groups = 5, "n_limited_groups"),
            (|c| c.n_activated_experts = 9, "n_activated_experts"),
            (
                |c| {
                    c.n_expert_groups = 16;
                    c.n_limited_groups = 16;
                },
                "n_expert_groups",
            ),
            (|c| c.route_scale = f64::NAN, "route_scale"),
        ];
        for (m, field) in mutations {
            let mut bad = c.clone();
            m(&mut bad);
            match bad.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected InvalidConfig for {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn deserialisation_validates_and_names_missing_fields() {
        let missing = r#"{"engram": {"max_ngram_size": 3}}"#;
        let err = serde_json::from_str::<EngramConfig>(missing).unwrap_err();
        assert!(err.to_string().contains("engram_vocab_size"), "{err}");
        let inconsistent = r#"{"engram_vocab_size":[10],"max_ngram_size":3,"n_embed_per_ngram":8,
            "n_head_per_ngram":4,"layer_ids":[0],"pad_id":2,"seed":0,"kernel_size":4,
            "hidden_size":16,"hc_mult":1}"#;
        let err = serde_json::from_str::<EngramConfig>(inconsistent).unwrap_err();
        assert!(err.to_string().contains("engram_vocab_size"), "{err}");
    }
}
