//! The suite's cases, as data: every op and both layers over a grid of shapes chosen to find bugs
//! (one token, sequences shorter than the order, length-1 and empty sequences inside a packed
//! batch, odd widths, M = 1 and 4, N = 2 to 5, empty batches, the largest ids, table rows at both
//! ends, top-k equal to the expert count, tied scores) and over every float dtype, plus the bad
//! inputs every backend must reject with the same typed error.
//!
//! A case's inputs come from a generator seeded by its name, so a failure reproduces anywhere.
//! The names here are the names of the tests [`crate::testgen!`] generates; a test inside this
//! crate checks that the two lists agree.

use engram_core::{DType, EngramConfig, MoeConfig, ScoreFunc};

/// An op family (or a whole layer) the suite checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `compress_ids`.
    CompressIds,
    /// `hash`.
    Hash,
    /// `gather_rows`.
    Gather,
    /// `rms_norm`.
    RmsNorm,
    /// `linear`.
    Linear,
    /// `gate`, and `gate_norm` on the same inputs.
    Gate,
    /// `short_conv` over a packed batch.
    ShortConv,
    /// `short_conv_decode`.
    ShortConvDecode,
    /// The Engram layer over a packed batch.
    EngramPrefill,
    /// One Engram decode step after a prefill of each sequence's prefix.
    EngramDecode,
    /// `moe_route`.
    MoeRoute,
    /// `expert_ffn`.
    ExpertFfn,
    /// The MoE layer.
    MoeLayer,
    /// The MoE layer on shapes that activate every expert, in every float dtype: nothing to
    /// rank, so half precision is checked too (`MoeLayer` ranks the layer's own scores, where a
    /// near-tie may round either way in half precision, so it runs in f32 and f64 only).
    MoeLayerAllExperts,
    /// Inputs every backend must reject.
    BadInput,
}

impl Family {
    /// Every family, in suite order.
    pub const ALL: [Family; 15] = [
        Family::CompressIds,
        Family::Hash,
        Family::Gather,
        Family::RmsNorm,
        Family::Linear,
        Family::Gate,
        Family::ShortConv,
        Family::ShortConvDecode,
        Family::EngramPrefill,
        Family::EngramDecode,
        Family::MoeRoute,
        Family::ExpertFfn,
        Family::MoeLayer,
        Family::MoeLayerAllExperts,
        Family::BadInput,
    ];

    /// The family's name in case names (`gather`, `engram_prefill`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Family::CompressIds => "compress_ids",
            Family::Hash => "hash",
            Family::Gather => "gather",
            Family::RmsNorm => "rms_norm",
            Family::Linear => "linear",
            Family::Gate => "gate",
            Family::ShortConv => "short_conv",
            Family::ShortConvDecode => "short_conv_decode",
            Family::EngramPrefill => "engram_prefill",
            Family::EngramDecode => "engram_decode",
            Family::MoeRoute => "moe_route",
            Family::ExpertFfn => "expert_ffn",
            Family::MoeLayer => "moe_layer",
            Family::MoeLayerAllExperts => "moe_layer_all_experts",
            Family::BadInput => "bad_input",
        }
    }

    /// The element types the family runs over (integer-only families run once, as `u32`).
    pub fn dtypes(self) -> &'static [DType] {
        const FLOATS: &[DType] = &[DType::F32, DType::BF16, DType::F16, DType::F64];
        match self {
            Family::CompressIds | Family::Hash => &[DType::U32],
            // Routing inside the layer ranks scores the layer computed itself: in half precision
            // a near-tie may legitimately round either way, so the layer runs where scores are
            // exact enough to rank (f32, f64); `moe_route` covers every dtype on given scores.
            Family::MoeLayer => &[DType::F32, DType::F64],
            Family::BadInput => &[DType::F32],
            _ => FLOATS,
        }
    }
}

/// How the ids of an Engram shape are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdPattern {
    /// Uniform over the compressed vocabulary.
    Random,
    /// Every id the largest one (`vocab - 1`).
    Largest,
}

/// An Engram-layer shape.
#[derive(Debug, Clone, PartialEq)]
pub struct EngramShape {
    /// The shape's name.
    pub name: &'static str,
    /// The layer's configuration.
    pub config: EngramConfig,
    /// Sequence lengths of the packed batch.
    pub lens: Vec<usize>,
    /// How ids are drawn.
    pub ids: IdPattern,
    /// Gather only: table rows alternate between the first and the last row of each head.
    pub rows_at_ends: bool,
}

/// Size of the compressed vocabulary of the cases (a prime, so ids exercise the modulus).
pub const CASE_VOCAB: u64 = 997;

fn engram_config(
    n: usize,
    k: usize,
    m: usize,
    d: usize,
    d_head: usize,
    kernel: usize,
    conv: bool,
) -> EngramConfig {
    EngramConfig {
        engram_vocab_size: vec![61; n - 1],
        max_ngram_size: n,
        n_embed_per_ngram: k * d_head,
        n_head_per_ngram: k,
        layer_ids: vec![4],
        pad_id: 1,
        seed: 17,
        kernel_size: kernel,
        hidden_size: d,
        hc_mult: m,
        short_conv: conv,
    }
}

/// Every Engram shape of the suite, by name.
pub fn engram_shapes() -> Vec<EngramShape> {
    let s = |name, config, lens: &[usize], ids| EngramShape {
        name,
        config,
        lens: lens.to_vec(),
        ids,
        rows_at_ends: false,
    };
    use IdPattern::{Largest, Random};
    vec![
        s(
            "one_token",
            engram_config(3, 2, 2, 8, 4, 4, true),
            &[1],
            Random,
        ),
        s(
            "shorter_than_order",
            engram_config(5, 2, 1, 6, 2, 4, true),
            &[3],
            Random,
        ),
        s(
            "len1_in_batch",
            engram_config(3, 3, 2, 10, 4, 4, true),
            &[4, 1, 1, 6, 1],
            Random,
        ),
        s(
            "odd_widths",
            engram_config(3, 3, 3, 13, 3, 3, true),
            &[5, 7],
            Random,
        ),
        s("m1", engram_config(3, 4, 1, 16, 4, 4, true), &[9], Random),
        s(
            "m4",
            engram_config(3, 4, 4, 16, 4, 4, true),
            &[6, 5],
            Random,
        ),
        s("n2", engram_config(2, 4, 2, 8, 2, 4, true), &[8], Random),
        s("n4", engram_config(4, 2, 2, 8, 4, 4, true), &[3, 9], Random),
        s("n5", engram_config(5, 2, 2, 8, 4, 3, true), &[10], Random),
        s(
            "empty_batch",
            engram_config(3, 2, 2, 8, 4, 4, true),
            &[],
            Random,
        ),
        s(
            "empty_sequences",
            engram_config(3, 2, 2, 8, 4, 4, true),
            &[0, 3, 0],
            Random,
        ),
        s(
            "largest_ids",
            engram_config(3, 2, 2, 8, 4, 4, true),
            &[5, 2],
            Largest,
        ),
        s(
            "no_conv",
            engram_config(4, 2, 2, 8, 4, 4, false),
            &[4, 6],
            Random,
        ),
        s(
            "kernel1",
            engram_config(3, 2, 2, 8, 4, 1, true),
            &[4, 6],
            Random,
        ),
        // Widths of whole 16-byte rows (d_head 8) and more than one 128-token and 128-output tile
        // with partial tiles and a partial k-tile: the shapes where a device's tiled fast path
        // (CUDA's tensor-core projection) is taken.
        s(
            "tensor_tiles",
            engram_config(3, 3, 2, 40, 8, 4, true),
            &[130, 1, 70],
            Random,
        ),
        s(
            "tensor_tiles_no_conv",
            engram_config(4, 2, 3, 48, 8, 4, false),
            &[140, 9],
            Random,
        ),
        s(
            "tensor_tiles_k3",
            engram_config(3, 2, 2, 24, 8, 3, true),
            &[129, 5],
            Random,
        ),
        // More k than a projection pipeline has stages (6 k-tiles of 64, the last partial;
        // heads of 40 elements end inside k-tiles) and two output tiles, the second partial: a
        // device's pipelined projection wraps its ring of stages. 220 tokens are too many to
        // split k; the decode step's 2 tokens are split into shares of k and reduced.
        s(
            "deep_k",
            engram_config(4, 3, 2, 48, 40, 4, true),
            &[150, 70],
            Random,
        ),
        // The same layer on 60 tokens: few enough output tiles that a device with many
        // multiprocessors (CUDA) splits k, each share of more than one k-tile.
        s(
            "deep_k_split",
            engram_config(4, 3, 2, 48, 40, 4, true),
            &[40, 20],
            Random,
        ),
        // A hidden size of 20 (not whole 16-byte rows) with 16-byte table rows: a device's fast
        // path keeps its tensor-core projection but takes its scalar gate and convolution.
        s(
            "tiles_hidden20",
            engram_config(3, 2, 2, 20, 8, 4, true),
            &[130, 3],
            Random,
        ),
        // A convolution of 6 taps on whole 16-byte rows: the fast path's 8-tap vector kernels.
        s(
            "tiles_kernel6",
            engram_config(3, 2, 2, 24, 8, 6, true),
            &[131, 2],
            Random,
        ),
        // A hidden size of 520: 65 chunks of 8 channels, more than one warp's worth, so that a
        // device's block-wide gate sums add up more than one warp (and 13 output tiles).
        s(
            "wide_hidden",
            engram_config(3, 2, 2, 520, 8, 4, true),
            &[4, 2],
            Random,
        ),
        // Three and four k-tiles of 64 on enough tokens not to split k: a device's projection
        // whose ring of stages holds every k-tile loads them all at once (CUDA: three stages
        // narrow, four wide), or wraps its ring once.
        s(
            "k_tiles3",
            engram_config(3, 2, 2, 16, 40, 4, true),
            &[150],
            Random,
        ),
        s(
            "k_tiles4",
            engram_config(3, 2, 2, 24, 56, 4, true),
            &[100, 30],
            Random,
        ),
        // Hidden sizes that are whole multiples of 128 (and so of 32 and 64), with one k-tile and
        // more than one token tile: a device's projection forms the gate's sums in its epilogue
        // (CUDA: segments of a warp tile's width, one or two of 128 per branch, 4 or 8 of 32),
        // and a wide output tile ends past the layer (3 x 128 outputs).
        s(
            "tiles_hidden128",
            engram_config(3, 2, 2, 128, 8, 4, true),
            &[130, 1, 60],
            Random,
        ),
        s(
            "tiles_hidden256_no_conv",
            engram_config(2, 4, 3, 256, 8, 3, false),
            &[140, 9],
            Random,
        ),
        // Rows wider than a block of the CUDA gather (260 16-byte chunks in f32, 130 in 16 bits).
        s(
            "wide_rows",
            engram_config(3, 2, 1, 8, 1040, 4, true),
            &[3, 2],
            Random,
        ),
        EngramShape {
            name: "rows_at_ends",
            rows_at_ends: true,
            ..s(
                "rows_at_ends",
                engram_config(3, 4, 2, 8, 4, 4, true),
                &[3, 2],
                Random,
            )
        },
    ]
}

/// An RMSNorm shape: `[rows, groups, d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormShape {
    /// The shape's name.
    pub name: &'static str,
    /// Rows.
    pub rows: usize,
    /// Groups per row (each with its own weight).
    pub groups: usize,
    /// Width of a group.
    pub d: usize,
}

/// Every RMSNorm shape.
pub fn norm_shapes() -> Vec<NormShape> {
    let s = |name, rows, groups, d| NormShape {
        name,
        rows,
        groups,
        d,
    };
    vec![
        s("single_element", 1, 1, 1),
        s("groups4", 5, 4, 16),
        s("odd", 3, 3, 13),
        s("empty", 0, 2, 8),
        s("wide", 3, 1, 1024),
        s("many_rows", 33, 2, 7),
    ]
}

/// A linear shape: `x [rows, in] W^T [in, out] (+ b)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearShape {
    /// The shape's name.
    pub name: &'static str,
    /// Rows of `x`.
    pub rows: usize,
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
    /// Whether a bias is added.
    pub bias: bool,
}

/// Every linear shape.
pub fn linear_shapes() -> Vec<LinearShape> {
    let s = |name, rows, inputs, outputs, bias| LinearShape {
        name,
        rows,
        inputs,
        outputs,
        bias,
    };
    vec![
        s("single", 1, 1, 1, true),
        s("bias", 5, 16, 24, true),
        s("odd_no_bias", 3, 13, 7, false),
        s("empty", 0, 8, 8, true),
        s("projection", 9, 48, 40, true),
        s("one_input", 4, 1, 33, false),
    ]
}

/// A decode-convolution shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvDecodeShape {
    /// The shape's name.
    pub name: &'static str,
    /// Sequences.
    pub seqs: usize,
    /// Channels.
    pub channels: usize,
    /// Kernel width.
    pub kernel: usize,
    /// Dilation.
    pub dilation: usize,
}

/// Every decode-convolution shape.
pub fn conv_decode_shapes() -> Vec<ConvDecodeShape> {
    let s = |name, seqs, channels, kernel, dilation| ConvDecodeShape {
        name,
        seqs,
        channels,
        kernel,
        dilation,
    };
    vec![
        s("one_seq", 1, 8, 4, 3),
        s("many", 5, 13, 3, 2),
        s("kernel1", 3, 6, 1, 3),
        s("wide", 2, 64, 4, 5),
    ]
}

/// An MoE shape.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeShape {
    /// The shape's name.
    pub name: &'static str,
    /// The layer's configuration.
    pub config: MoeConfig,
    /// Tokens.
    pub tokens: usize,
    /// Route only: scores quantised to a coarse grid, so many are tied.
    pub ties: bool,
}

#[allow(clippy::too_many_arguments)]
fn moe_config(
    dim: usize,
    inter: usize,
    e: usize,
    shared: usize,
    k: usize,
    groups: usize,
    limited: usize,
    func: ScoreFunc,
    bias: bool,
) -> MoeConfig {
    MoeConfig {
        dim,
        moe_inter_dim: inter,
        n_routed_experts: e,
        n_shared_experts: shared,
        n_activated_experts: k,
        n_expert_groups: groups,
        n_limited_groups: limited,
        route_scale: 2.5,
        score_func: func,
        bias,
    }
}

/// Every MoE shape (route and layer cases).
pub fn moe_shapes() -> Vec<MoeShape> {
    use ScoreFunc::{Sigmoid, Softmax};
    let s = |name, config, tokens, ties| MoeShape {
        name,
        config,
        tokens,
        ties,
    };
    vec![
        s(
            "sigmoid_grouped_bias",
            moe_config(16, 8, 16, 1, 4, 4, 2, Sigmoid, true),
            11,
            false,
        ),
        s(
            "softmax_flat",
            moe_config(12, 6, 8, 2, 2, 1, 1, Softmax, false),
            9,
            false,
        ),
        s(
            "sigmoid_flat_nobias",
            moe_config(10, 5, 6, 0, 3, 1, 1, Sigmoid, false),
            7,
            false,
        ),
        s(
            "softmax_grouped_bias",
            moe_config(8, 4, 12, 1, 3, 3, 2, Softmax, true),
            8,
            false,
        ),
        s(
            "topk_all",
            moe_config(9, 3, 5, 1, 5, 1, 1, Sigmoid, true),
            6,
            false,
        ),
        s(
            "one_token",
            moe_config(16, 8, 8, 1, 2, 2, 1, Sigmoid, true),
            1,
            false,
        ),
        s(
            "empty_batch",
            moe_config(8, 4, 8, 1, 2, 2, 1, Sigmoid, true),
            0,
            false,
        ),
        s(
            "ties",
            moe_config(8, 4, 8, 0, 3, 4, 2, Sigmoid, true),
            12,
            true,
        ),
        s(
            "shared2",
            moe_config(12, 6, 8, 2, 2, 2, 2, Softmax, false),
            10,
            false,
        ),
        // Every expert of every group active, softmax scores without bias (with topk_all, the
        // shapes of the layer in half precision).
        s(
            "softmax_all",
            moe_config(12, 6, 6, 1, 6, 2, 2, Softmax, false),
            7,
            false,
        ),
    ]
}

/// An expert-FFN shape: `rows` tokens of width `dim` through one expert of width `inter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FfnShape {
    /// The shape's name.
    pub name: &'static str,
    /// Rows.
    pub rows: usize,
    /// Model width.
    pub dim: usize,
    /// Expert width.
    pub inter: usize,
}

/// Every expert-FFN shape.
pub fn ffn_shapes() -> Vec<FfnShape> {
    let s = |name, rows, dim, inter| FfnShape {
        name,
        rows,
        dim,
        inter,
    };
    vec![
        s("one_row", 1, 8, 4),
        s("odd", 5, 13, 7),
        s("empty", 0, 8, 4),
        s("wide", 9, 64, 48),
    ]
}

/// A bad input, and the error every backend must answer it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadInput {
    /// An id equal to the vocabulary size.
    HashIdAtVocab,
    /// The largest `u32` as an id.
    HashIdMax,
    /// A raw id beyond the lookup table.
    CompressIdBeyondRaw,
    /// `cu_seqlens` that decreases.
    SeqlensDecreasing,
    /// `cu_seqlens` that does not end at the batch length.
    SeqlensNotEndingAtTotal,
    /// `cu_seqlens` that does not start at 0.
    SeqlensNotStartingAtZero,
    /// `cu_seqlens` with no entry at all.
    SeqlensEmpty,
    /// Hidden states of the wrong length.
    PrefillHiddenWrongLen,
    /// An output buffer of the wrong length.
    PrefillOutputWrongLen,
    /// A row beyond its head's table.
    GatherRowBeyondTable,
    /// A decode state for another number of sequences.
    DecodeStateWrongSequences,
    /// A decode id beyond the vocabulary (the state must stay untouched).
    DecodeIdBeyondVocab,
    /// A whole bf16 prefill (gates and decode state asked for: the shape a device's tiled fast
    /// path takes) with an id beyond the vocabulary: output, gates and state untouched.
    PrefillIdBeyondVocab,
    /// The same prefill with `cu_seqlens` that decreases.
    PrefillSeqlensDecreasing,
    /// A bf16 decode step on the same shape (gates asked for) with an id beyond the
    /// vocabulary: output, gates and state untouched.
    DecodeTilesIdBeyondVocab,
    /// The same decode step from an uploaded state whose id history holds an id beyond the
    /// vocabulary.
    DecodeTilesHistoryBeyondVocab,
    /// The hash of decode windows (`hash_decode`) whose id history holds an id beyond the
    /// vocabulary.
    HashDecodeHistoryBeyondVocab,
    /// A bias of the wrong length.
    LinearBiasWrongLen,
    /// An MoE input that is not a whole number of tokens.
    MoeInputWrongLen,
    /// A gate bias of the wrong length.
    RouteBiasWrongLen,
    /// A dtype the backend lacks (not applicable where it has them all).
    UnsupportedDtype,
}

impl BadInput {
    /// Every bad input.
    pub const ALL: [BadInput; 21] = [
        BadInput::HashIdAtVocab,
        BadInput::HashIdMax,
        BadInput::CompressIdBeyondRaw,
        BadInput::SeqlensDecreasing,
        BadInput::SeqlensNotEndingAtTotal,
        BadInput::SeqlensNotStartingAtZero,
        BadInput::SeqlensEmpty,
        BadInput::PrefillHiddenWrongLen,
        BadInput::PrefillOutputWrongLen,
        BadInput::GatherRowBeyondTable,
        BadInput::DecodeStateWrongSequences,
        BadInput::DecodeIdBeyondVocab,
        BadInput::PrefillIdBeyondVocab,
        BadInput::PrefillSeqlensDecreasing,
        BadInput::DecodeTilesIdBeyondVocab,
        BadInput::DecodeTilesHistoryBeyondVocab,
        BadInput::HashDecodeHistoryBeyondVocab,
        BadInput::LinearBiasWrongLen,
        BadInput::MoeInputWrongLen,
        BadInput::RouteBiasWrongLen,
        BadInput::UnsupportedDtype,
    ];

    /// The case's shape name.
    pub fn name(self) -> &'static str {
        match self {
            BadInput::HashIdAtVocab => "hash_id_at_vocab",
            BadInput::HashIdMax => "hash_id_max",
            BadInput::CompressIdBeyondRaw => "compress_id_beyond_raw",
            BadInput::SeqlensDecreasing => "seqlens_decreasing",
            BadInput::SeqlensNotEndingAtTotal => "seqlens_not_ending_at_total",
            BadInput::SeqlensNotStartingAtZero => "seqlens_not_starting_at_zero",
            BadInput::SeqlensEmpty => "seqlens_empty",
            BadInput::PrefillHiddenWrongLen => "prefill_hidden_wrong_len",
            BadInput::PrefillOutputWrongLen => "prefill_output_wrong_len",
            BadInput::GatherRowBeyondTable => "gather_row_beyond_table",
            BadInput::DecodeStateWrongSequences => "decode_state_wrong_sequences",
            BadInput::DecodeIdBeyondVocab => "decode_id_beyond_vocab",
            BadInput::PrefillIdBeyondVocab => "prefill_id_beyond_vocab",
            BadInput::PrefillSeqlensDecreasing => "prefill_seqlens_decreasing",
            BadInput::DecodeTilesIdBeyondVocab => "decode_tiles_id_beyond_vocab",
            BadInput::DecodeTilesHistoryBeyondVocab => "decode_tiles_history_beyond_vocab",
            BadInput::HashDecodeHistoryBeyondVocab => "hash_decode_history_beyond_vocab",
            BadInput::LinearBiasWrongLen => "linear_bias_wrong_len",
            BadInput::MoeInputWrongLen => "moe_input_wrong_len",
            BadInput::RouteBiasWrongLen => "route_bias_wrong_len",
            BadInput::UnsupportedDtype => "unsupported_dtype",
        }
    }
}

/// What a case runs on.
#[derive(Debug, Clone, PartialEq)]
pub enum Params {
    /// Raw ids through a lookup: `(ids, raw vocabulary, whether the largest raw id is used)`.
    Compress {
        /// The shape's name.
        name: &'static str,
        /// Ids to compress.
        ids: usize,
        /// Raw vocabulary size.
        raw_vocab: usize,
    },
    /// An Engram shape.
    Engram(EngramShape),
    /// An RMSNorm shape.
    Norm(NormShape),
    /// A linear shape.
    Linear(LinearShape),
    /// A decode-convolution shape.
    ConvDecode(ConvDecodeShape),
    /// An MoE shape.
    Moe(MoeShape),
    /// An expert-FFN shape.
    Ffn(FfnShape),
    /// A bad input.
    Bad(BadInput),
}

/// One case: a family, a dtype, a shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// `family/dtype/shape`, also the seed of its inputs.
    pub name: String,
    /// The op or layer.
    pub family: Family,
    /// Element type of its float data (`u32` for integer-only families).
    pub dtype: DType,
    /// Its shape.
    pub params: Params,
}

/// The `in_<dtype>` segment of case and test names.
pub fn dtype_segment(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "in_f32",
        DType::BF16 => "in_bf16",
        DType::F16 => "in_f16",
        DType::F64 => "in_f64",
        DType::U32 => "in_u32",
        DType::U64 => "in_u64",
        _ => "in_other",
    }
}

impl Case {
    fn new(family: Family, dtype: DType, shape: &str, params: Params) -> Self {
        Case {
            name: format!("{}/{}/{shape}", family.name(), dtype_segment(dtype)),
            family,
            dtype,
            params,
        }
    }

    /// The seed of this case's inputs: FNV-1a of its name.
    pub fn seed(&self) -> u64 {
        self.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// The shape's name (the last segment of [`Case::name`]).
    pub fn shape(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or("")
    }
}

fn engram_shapes_named(names: &[&str]) -> Vec<EngramShape> {
    let all = engram_shapes();
    names
        .iter()
        .filter_map(|n| all.iter().find(|s| s.name == *n).cloned())
        .collect()
}

/// The Engram shapes of each family that runs on Engram shapes.
pub fn engram_shapes_of(family: Family) -> Vec<EngramShape> {
    const PREFILL: &[&str] = &[
        "one_token",
        "shorter_than_order",
        "len1_in_batch",
        "odd_widths",
        "m1",
        "m4",
        "n2",
        "n4",
        "n5",
        "empty_batch",
        "empty_sequences",
        "largest_ids",
        "no_conv",
        "kernel1",
        "tensor_tiles",
        "tensor_tiles_no_conv",
        "tensor_tiles_k3",
        "deep_k",
        "deep_k_split",
        "tiles_hidden20",
        "tiles_kernel6",
        "wide_hidden",
        "tiles_hidden128",
        "tiles_hidden256_no_conv",
        "k_tiles3",
        "k_tiles4",
    ];
    match family {
        Family::Hash | Family::EngramPrefill => engram_shapes_named(PREFILL),
        Family::Gather => engram_shapes_named(&[
            "one_token",
            "len1_in_batch",
            "odd_widths",
            "n5",
            "empty_batch",
            "rows_at_ends",
            "m4",
            "largest_ids",
            "wide_rows",
        ]),
        Family::Gate => {
            engram_shapes_named(&["one_token", "odd_widths", "m1", "m4", "empty_batch", "n2"])
        }
        Family::ShortConv => engram_shapes_named(&[
            "one_token",
            "len1_in_batch",
            "odd_widths",
            "kernel1",
            "empty_sequences",
            "n5",
        ]),
        Family::EngramDecode => engram_shapes_named(&[
            "one_token",
            "shorter_than_order",
            "len1_in_batch",
            "odd_widths",
            "m1",
            "m4",
            "n2",
            "n5",
            "no_conv",
            "kernel1",
            "tensor_tiles",
            "tensor_tiles_no_conv",
            "tensor_tiles_k3",
            "deep_k",
            "deep_k_split",
            "tiles_hidden20",
            "tiles_kernel6",
            "wide_hidden",
            "tiles_hidden128",
            "k_tiles3",
            "k_tiles4",
        ]),
        _ => Vec::new(),
    }
}

/// Every case of the suite, in order.
pub fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for family in Family::ALL {
        for &dtype in family.dtypes() {
            let mut push =
                |shape: &str, params| cases.push(Case::new(family, dtype, shape, params));
            match family {
                Family::CompressIds => {
                    for (name, ids, raw_vocab) in [
                        ("random", 40, 300),
                        ("largest_id", 7, 129_280),
                        ("empty", 0, 5),
                    ] {
                        push(
                            name,
                            Params::Compress {
                                name,
                                ids,
                                raw_vocab,
                            },
                        );
                    }
                }
                Family::Hash
                | Family::Gather
                | Family::Gate
                | Family::ShortConv
                | Family::EngramPrefill
                | Family::EngramDecode => {
                    for s in engram_shapes_of(family) {
                        push(s.name, Params::Engram(s));
                    }
                }
                Family::RmsNorm => norm_shapes()
                    .into_iter()
                    .for_each(|s| push(s.name, Params::Norm(s))),
                Family::Linear => linear_shapes()
                    .into_iter()
                    .for_each(|s| push(s.name, Params::Linear(s))),
                Family::ShortConvDecode => conv_decode_shapes()
                    .into_iter()
                    .for_each(|s| push(s.name, Params::ConvDecode(s))),
                Family::MoeRoute => moe_shapes()
                    .into_iter()
                    .filter(|s| s.name != "shared2")
                    .for_each(|s| push(s.name, Params::Moe(s))),
                Family::MoeLayerAllExperts => moe_shapes()
                    .into_iter()
                    .filter(|s| s.config.n_activated_experts == s.config.n_routed_experts)
                    .for_each(|s| push(s.name, Params::Moe(s))),
                Family::MoeLayer => moe_shapes()
                    .into_iter()
                    .filter(|s| {
                        [
                            "sigmoid_grouped_bias",
                            "softmax_flat",
                            "topk_all",
                            "one_token",
                            "empty_batch",
                            "shared2",
                        ]
                        .contains(&s.name)
                    })
                    .for_each(|s| push(s.name, Params::Moe(s))),
                Family::ExpertFfn => ffn_shapes()
                    .into_iter()
                    .for_each(|s| push(s.name, Params::Ffn(s))),
                Family::BadInput => BadInput::ALL
                    .into_iter()
                    .for_each(|b| push(b.name(), Params::Bad(b))),
            }
        }
    }
    cases
}

/// Model-sized cases for perf mode: the reference demo's layer widths (hidden 1024, M = 4,
/// N = 3, 8 heads of 64 columns per order; tables of 65536 rows per head so they build quickly)
/// over 512 tokens or 64 decoding sequences, and DeepSeek-V3-shaped routing.
pub fn perf_cases() -> Vec<Case> {
    let demo = |lens: Vec<usize>| {
        let mut config = EngramConfig::demo();
        config.engram_vocab_size = vec![65_536, 65_536];
        config.layer_ids = vec![4];
        EngramShape {
            name: "demo_width",
            config,
            lens,
            ids: IdPattern::Random,
            rows_at_ends: false,
        }
    };
    let v3_route = MoeShape {
        name: "v3_routing",
        config: moe_config(64, 32, 256, 1, 8, 8, 4, ScoreFunc::Sigmoid, true),
        tokens: 512,
        ties: false,
    };
    let small_moe = MoeShape {
        name: "moe_64x512",
        config: moe_config(512, 256, 64, 1, 6, 8, 4, ScoreFunc::Sigmoid, true),
        tokens: 128,
        ties: false,
    };
    let mut cases = Vec::new();
    let mut add = |family: Family, dtype: DType, params: Params| {
        let shape = match &params {
            Params::Engram(s) => s.name,
            Params::Linear(s) => s.name,
            Params::Moe(s) => s.name,
            Params::Ffn(s) => s.name,
            Params::Norm(s) => s.name,
            _ => "perf",
        };
        let mut c = Case::new(family, dtype, shape, params);
        c.name = format!("perf/{}", c.name);
        cases.push(c);
    };
    add(Family::Hash, DType::U32, Params::Engram(demo(vec![512; 4])));
    for dtype in [DType::F32, DType::BF16] {
        add(Family::Gather, dtype, Params::Engram(demo(vec![512; 4])));
        add(
            Family::Linear,
            dtype,
            Params::Linear(LinearShape {
                name: "stacked_projection",
                rows: 512,
                inputs: 1024,
                outputs: 5120,
                bias: true,
            }),
        );
        add(Family::Gate, dtype, Params::Engram(demo(vec![512])));
        add(Family::ShortConv, dtype, Params::Engram(demo(vec![512])));
        add(
            Family::RmsNorm,
            dtype,
            Params::Norm(NormShape {
                name: "branches",
                rows: 512,
                groups: 4,
                d: 1024,
            }),
        );
        add(
            Family::EngramPrefill,
            dtype,
            Params::Engram(demo(vec![512])),
        );
        add(
            Family::EngramDecode,
            dtype,
            Params::Engram(demo(vec![2; 64])),
        );
        add(Family::MoeRoute, dtype, Params::Moe(v3_route.clone()));
        add(
            Family::ExpertFfn,
            dtype,
            Params::Ffn(FfnShape {
                name: "expert_512x256",
                rows: 128,
                dim: 512,
                inter: 256,
            }),
        );
    }
    add(Family::MoeLayer, DType::F32, Params::Moe(small_moe));
    cases
}
