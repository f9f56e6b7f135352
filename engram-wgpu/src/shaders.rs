//! The WGSL kernels, public so that another wgpu program can dispatch them on its own device.
//!
//! Each [`Kernel`] is one compute entry point (named as the kernel) in its own shader module:
//! [`source`] assembles the module from the shared helpers (`shaders/common.wgsl`), the storage
//! declarations of the kernel's [`bindings`](Kernel::bindings) for one element type, and the
//! kernel's body (`shaders/<name>.wgsl`, whose comment gives the meaning of each parameter).
//!
//! Conventions every kernel follows:
//! - group 0, binding 0 is `P: array<u32>` (read-only storage), the kernel's scalar parameters in
//!   the order its comment lists (floats as their bit patterns);
//! - the other bindings are storage buffers, read-only or read-write as [`Binding::access`] says;
//! - float data is f32 in registers. f32 buffers are `array<f32>`; f16 and bf16 buffers are
//!   `array<u32>` holding two elements per word, low half first, widened on load and rounded to
//!   nearest even on store (16-bit stores go through `atomicAnd`/`atomicOr` on
//!   `array<atomic<u32>>`, so two invocations writing the two halves of one word never race). So
//!   the kernels need no optional feature: they run on every WebGPU adapter;
//! - elementwise kernels take one invocation per item in a 2-D grid of workgroups (x at most
//!   65535, the linear workgroup index is `y * num_workgroups.x + x`) and ignore invocations past
//!   the end; [`Kernel::workgroup_size`] and [`Kernel::grid`] tell how many to dispatch.

use engram_core::DType;

/// What a binding holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// Float data of the kernel's element type (f32, or two 16-bit elements per u32 word).
    Float,
    /// `u32` data.
    U32,
    /// `u32` words updated with atomics (the result of a search).
    AtomicU32,
    /// Read-only float data loaded four elements at a time (`ld4_<name>(q)` returns elements
    /// `4q .. 4q + 3`): `array<vec4<f32>>` in f32, `array<vec2<u32>>` in f16 and bf16.
    Float4,
}

/// How a kernel uses a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-only storage.
    Read,
    /// Read-write storage.
    ReadWrite,
}

/// One storage binding of a kernel (group 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The binding index.
    pub binding: u32,
    /// The WGSL variable name.
    pub name: &'static str,
    /// What it holds.
    pub elem: Elem,
    /// Read-only or read-write.
    pub access: Access,
}

/// How the invocations of a kernel map onto its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// One invocation per item.
    PerItem,
    /// One workgroup per item (a vector reduced by the whole workgroup).
    PerGroup,
    /// Workgroups of 64 x 64 outputs: grid (ceil(out / 64), ceil(rows / 64)).
    Tiles64,
}

macro_rules! kernels {
    ($($variant:ident => $name:literal, typed: $typed:literal, packed: $packed:literal,
        size: $size:expr, grid: $grid:ident,
        [$($bname:literal : $elem:ident $access:ident),*];)*) => {
        /// Every kernel of the backend.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kernel {
            $(
                #[doc = concat!("The `", $name, "` kernel (`shaders/", $name, ".wgsl`).")]
                $variant,
            )*
        }

        impl Kernel {
            /// Every kernel.
            pub const ALL: &'static [Kernel] = &[$(Kernel::$variant),*];

            /// The kernel's name, which is also its entry point.
            pub fn name(self) -> &'static str {
                match self { $(Kernel::$variant => $name,)* }
            }

            /// Whether the kernel has float bindings, so its module depends on the element type.
            pub fn is_typed(self) -> bool {
                match self { $(Kernel::$variant => $typed,)* }
            }

            fn needs_packed_search(self) -> bool {
                match self { $(Kernel::$variant => $packed,)* }
            }

            /// The workgroup size `(x, y, z)`.
            pub fn workgroup_size(self) -> (u32, u32, u32) {
                match self { $(Kernel::$variant => $size,)* }
            }

            /// How invocations map onto the work.
            pub fn grid(self) -> Grid {
                match self { $(Kernel::$variant => Grid::$grid,)* }
            }

            /// The bindings after `P` (binding 0), in binding order.
            pub fn bindings(self) -> &'static [Binding] {
                match self {
                    $(Kernel::$variant => {
                        const B: &[Binding] = &kernels!(@bindings 1u32; $($bname : $elem $access),*);
                        B
                    })*
                }
            }

            fn body(self) -> &'static str {
                match self {
                    $(Kernel::$variant => include_str!(concat!("../shaders/", $name, ".wgsl")),)*
                }
            }
        }
    };
    (@bindings $i:expr; $($bname:literal : $elem:ident $access:ident),*) => {
        kernels!(@acc [] $i; $($bname : $elem $access),*)
    };
    (@acc [$($done:expr),*] $i:expr; $bname:literal : $elem:ident $access:ident $(, $rest:literal : $relem:ident $raccess:ident)*) => {
        kernels!(@acc [$($done,)* Binding { binding: $i, name: $bname, elem: Elem::$elem, access: Access::$access }] $i + 1; $($rest : $relem $raccess),*)
    };
    (@acc [$($done:expr),*] $i:expr;) => { [$($done),*] };
}

kernels! {
    CompressIds => "compress_ids", typed: false, packed: false, size: (256, 1, 1), grid: PerItem,
        ["lookup": U32 Read, "raw": U32 Read, "out": U32 ReadWrite];
    FirstGe => "first_ge", typed: false, packed: false, size: (256, 1, 1), grid: PerItem,
        ["v": U32 Read, "first": AtomicU32 ReadWrite];
    FirstRowBeyond => "first_row_beyond", typed: false, packed: false, size: (256, 1, 1), grid: PerItem,
        ["rows": U32 Read, "sizes": U32 Read, "first": AtomicU32 ReadWrite];
    HashRows => "hash_rows", typed: false, packed: true, size: (256, 1, 1), grid: PerItem,
        ["ids": U32 Read, "cu": U32 Read, "mult": U32 Read, "sizes": U32 Read, "rows": U32 ReadWrite,
         "lookup": U32 Read];
    HashDecode => "hash_decode", typed: false, packed: false, size: (256, 1, 1), grid: PerItem,
        ["history": U32 Read, "ids": U32 Read, "mult": U32 Read, "sizes": U32 Read, "rows": U32 ReadWrite];
    PushIds => "push_ids", typed: false, packed: false, size: (256, 1, 1), grid: PerItem,
        ["history": U32 ReadWrite, "ids": U32 Read];
    CaptureIds => "capture_ids", typed: false, packed: false, size: (256, 1, 1), grid: PerItem,
        ["ids": U32 Read, "cu": U32 Read, "state": U32 ReadWrite];
    Gather => "gather", typed: true, packed: false, size: (256, 1, 1), grid: PerItem,
        ["table": Float Read, "offsets": U32 Read, "rows": U32 Read, "out": Float ReadWrite];
    RmsNorm => "rms_norm", typed: true, packed: false, size: (256, 1, 1), grid: PerGroup,
        ["x": Float Read, "w": Float Read, "out": Float ReadWrite];
    Linear => "linear", typed: true, packed: false, size: (16, 16, 1), grid: Tiles64,
        ["x": Float Read, "w": Float Read, "bias": Float Read, "y": Float ReadWrite];
    LinearVec4 => "linear_vec4", typed: true, packed: false, size: (16, 16, 1), grid: Tiles64,
        ["x": Float4 Read, "w": Float4 Read, "bias": Float Read, "y": Float ReadWrite];
    LinearVec4Tiled => "linear_vec4_tiled", typed: true, packed: false, size: (16, 16, 1), grid: Tiles64,
        ["x": Float4 Read, "w": Float4 Read, "bias": Float Read, "y": Float ReadWrite];
    Gate => "gate", typed: true, packed: false, size: (256, 1, 1), grid: PerGroup,
        ["proj": Float Read, "hidden": Float Read, "key_norm": Float Read, "query_norm": Float Read,
         "value": Float ReadWrite, "alpha": Float ReadWrite];
    GateNorm => "gate_norm", typed: true, packed: false, size: (256, 1, 1), grid: PerGroup,
        ["proj": Float Read, "hidden": Float Read, "key_norm": Float Read, "query_norm": Float Read,
         "conv_norm": Float Read, "value": Float ReadWrite, "alpha": Float ReadWrite,
         "normed": Float ReadWrite];
    ShortConv => "short_conv", typed: true, packed: true, size: (256, 1, 1), grid: PerItem,
        ["normed": Float Read, "value": Float Read, "w": Float Read, "cu": U32 Read, "out": Float ReadWrite];
    ShortConvDecode => "short_conv_decode", typed: true, packed: false, size: (256, 1, 1), grid: PerItem,
        ["normed": Float Read, "value": Float Read, "w": Float Read, "history": Float ReadWrite,
         "out": Float ReadWrite];
    CaptureConv => "capture_conv", typed: true, packed: false, size: (256, 1, 1), grid: PerItem,
        ["normed": Float Read, "cu": U32 Read, "state": Float ReadWrite];
    ScoresAct => "scores_act", typed: true, packed: false, size: (64, 1, 1), grid: PerItem,
        ["logits": Float Read, "scores": Float ReadWrite];
    Route => "route", typed: true, packed: false, size: (64, 1, 1), grid: PerItem,
        ["scores": Float Read, "bias": Float Read, "weights": Float ReadWrite, "indices": U32 ReadWrite];
    SiluMul => "silu_mul", typed: true, packed: false, size: (256, 1, 1), grid: PerItem,
        ["a": Float Read, "b": Float Read, "h": Float ReadWrite];
    ExpertCount => "expert_count", typed: false, packed: false, size: (256, 1, 1), grid: PerItem,
        ["idx": U32 Read, "counts": AtomicU32 ReadWrite];
    ExpertOffsets => "expert_offsets", typed: false, packed: false, size: (1, 1, 1), grid: PerGroup,
        ["counts": U32 Read, "offsets": U32 ReadWrite];
    ExpertScatter => "expert_scatter", typed: false, packed: false, size: (256, 1, 1), grid: PerItem,
        ["idx": U32 Read, "offsets": U32 Read, "cursor": AtomicU32 ReadWrite, "order": U32 ReadWrite];
    GroupedLinear => "grouped_linear", typed: true, packed: false, size: (16, 16, 1), grid: Tiles64,
        ["x": Float Read, "w": Float Read, "order": U32 Read, "offsets": U32 Read, "y": Float ReadWrite];
    Combine => "combine", typed: true, packed: false, size: (256, 1, 1), grid: PerItem,
        ["expert_out": Float Read, "weights": Float Read, "shared_out": Float Read, "out": Float ReadWrite];
    Copy => "copy", typed: true, packed: false, size: (256, 1, 1), grid: PerItem,
        ["src": Float Read, "dst": Float ReadWrite];
}

/// The helpers every module starts with.
pub const COMMON_WGSL: &str = include_str!("../shaders/common.wgsl");
/// The packed-batch search (`sequence_of`), added to kernels with a `cu` binding.
pub const PACKED_WGSL: &str = include_str!("../shaders/packed.wgsl");
/// The workgroup sum `reduce3` for every adapter (a tree in workgroup memory).
pub const REDUCE_PORTABLE_WGSL: &str = include_str!("../shaders/reduce_portable.wgsl");
/// The workgroup sum `reduce3` with subgroup operations (needs wgpu's `SUBGROUP` feature).
pub const REDUCE_SUBGROUPS_WGSL: &str = include_str!("../shaders/reduce_subgroups.wgsl");

/// The gate's arithmetic, shared by `gate` and `gate_norm`.
pub const GATE_COMMON_WGSL: &str = include_str!("../shaders/gate_common.wgsl");
/// The bias and store helpers shared by the projection kernels.
pub const LINEAR_COMMON_WGSL: &str = include_str!("../shaders/linear_common.wgsl");

impl Kernel {
    /// Whether the kernel sums over its workgroup (`reduce3`), so that it has a variant with
    /// subgroup operations (see [`Variant::subgroups`]).
    pub fn reduces(self) -> bool {
        matches!(self, Kernel::RmsNorm | Kernel::Gate | Kernel::GateNorm)
    }

    /// The shared helper files the module includes before the kernel's body.
    fn shared_parts(self) -> &'static [&'static str] {
        match self {
            Kernel::Gate | Kernel::GateNorm => &[GATE_COMMON_WGSL],
            Kernel::Linear | Kernel::LinearVec4 | Kernel::LinearVec4Tiled => &[LINEAR_COMMON_WGSL],
            _ => &[],
        }
    }
}

/// The element types the float kernels are generated for.
pub const FLOAT_DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Float storage helpers for one element type: `narrow` (round an f32 to the type) and, for the
/// 16-bit types, the bit conversions.
fn dtype_helpers(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => {
            "// IEEE binary16 in integer code (round to nearest even, subnormals, infinities, NaN),\n\
             // so the result is the same on every adapter.\n\
             fn to_bits(v: f32) -> u32 {\n    let b = bitcast<u32>(v);\n    \
             let s = (b >> 16u) & 0x8000u;\n    let a = b & 0x7fffffffu;\n    \
             if (a > 0x7f800000u) {\n        return s | 0x7e00u;\n    }\n    \
             if (a >= 0x477ff000u) {\n        return s | 0x7c00u;\n    }\n    \
             if (a >= 0x38800000u) {\n        let r = a - 0x38000000u;\n        \
             return s | ((r + 0xfffu + ((r >> 13u) & 1u)) >> 13u);\n    }\n    \
             let x = bitcast<f32>(a) * 16777216.0;\n    let fl = floor(x);\n    \
             var q = u32(fl);\n    let diff = x - fl;\n    \
             if (diff > 0.5 || (diff == 0.5 && (q & 1u) == 1u)) {\n        q = q + 1u;\n    }\n    \
             return s | q;\n}\n\
             fn from_bits(w: u32, i: u32) -> f32 {\n    let h = (w >> ((i & 1u) * 16u)) & 0xffffu;\n    \
             let s = (h & 0x8000u) << 16u;\n    let e = (h >> 10u) & 0x1fu;\n    let m = h & 0x3ffu;\n    \
             if (e == 0u) {\n        return bitcast<f32>(s | bitcast<u32>(f32(m) * 5.9604644775390625e-8));\n    }\n    \
             if (e == 31u) {\n        return bitcast<f32>(s | 0x7f800000u | (m << 13u));\n    }\n    \
             return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));\n}\n\
             fn narrow(v: f32) -> f32 {\n    return from_bits(to_bits(v), 0u);\n}\n"
        }
        DType::BF16 => {
            "// Round to nearest even; NaN stays NaN (quiet).\n\
             fn to_bits(v: f32) -> u32 {\n    let b = bitcast<u32>(v);\n    \
             if ((b & 0x7fffffffu) > 0x7f800000u) {\n        return (b >> 16u) | 0x40u;\n    }\n    \
             return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;\n}\n\
             fn from_bits(w: u32, i: u32) -> f32 {\n    \
             return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) == 1u));\n}\n\
             fn narrow(v: f32) -> f32 {\n    return from_bits(to_bits(v), 0u);\n}\n"
        }
        _ => "fn narrow(v: f32) -> f32 {\n    return v;\n}\n",
    }
}

/// Declares binding `b` and its accessors: `native` is the WGSL element type when the data is
/// stored as one (`f32`, or `f16` with the `f16` extension), `None` for 16-bit data packed two
/// per `u32`.
fn declare(out: &mut String, b: &Binding, native: Option<&str>) {
    use std::fmt::Write;
    let n = b.name;
    let (access, ty) = match (b.elem, b.access, native) {
        (Elem::U32, Access::Read, _) => ("read", "array<u32>".to_owned()),
        (Elem::U32, Access::ReadWrite, _) => ("read_write", "array<u32>".to_owned()),
        (Elem::AtomicU32, _, _) => ("read_write", "array<atomic<u32>>".to_owned()),
        (Elem::Float4, _, Some(t)) => ("read", format!("array<vec4<{t}>>")),
        (Elem::Float4, _, None) => ("read", "array<vec2<u32>>".to_owned()),
        (Elem::Float, Access::Read, Some(t)) => ("read", format!("array<{t}>")),
        (Elem::Float, Access::ReadWrite, Some(t)) => ("read_write", format!("array<{t}>")),
        (Elem::Float, Access::Read, None) => ("read", "array<u32>".to_owned()),
        (Elem::Float, Access::ReadWrite, None) => ("read_write", "array<atomic<u32>>".to_owned()),
    };
    let _ = writeln!(
        out,
        "@group(0) @binding({}) var<storage, {access}> {n}: {ty};",
        b.binding
    );
    let accessors = match (b.elem, b.access, native) {
        (Elem::U32 | Elem::AtomicU32, _, _) => String::new(),
        (Elem::Float4, _, Some(_)) => {
            format!("fn ld4_{n}(q: u32) -> vec4<f32> {{\n    return vec4<f32>({n}[q]);\n}}")
        }
        (Elem::Float4, _, None) => format!(
            "fn ld4_{n}(q: u32) -> vec4<f32> {{\n    let w = {n}[q];\n    \
             return vec4<f32>(from_bits(w.x, 0u), from_bits(w.x, 1u), from_bits(w.y, 0u), \
             from_bits(w.y, 1u));\n}}"
        ),
        (Elem::Float, access, Some(t)) => {
            let mut f = format!("fn ld_{n}(i: u32) -> f32 {{\n    return f32({n}[i]);\n}}");
            if access == Access::ReadWrite {
                f.push_str(&format!(
                    "\nfn st_{n}(i: u32, v: f32) {{\n    {n}[i] = {t}(v);\n}}"
                ));
            }
            f
        }
        (Elem::Float, Access::Read, None) => {
            format!("fn ld_{n}(i: u32) -> f32 {{\n    return from_bits({n}[i >> 1u], i);\n}}")
        }
        (Elem::Float, Access::ReadWrite, None) => format!(
            "fn ld_{n}(i: u32) -> f32 {{\n    return from_bits(atomicLoad(&{n}[i >> 1u]), i);\n}}\n\
             fn st_{n}(i: u32, v: f32) {{\n    let sh = (i & 1u) * 16u;\n    \
             atomicAnd(&{n}[i >> 1u], ~(0xffffu << sh));\n    \
             atomicOr(&{n}[i >> 1u], to_bits(v) << sh);\n}}"
        ),
    };
    if !accessors.is_empty() {
        let _ = writeln!(out, "{accessors}");
    }
}

/// Optional adapter features a module may use. The default uses none: the module runs on every
/// WebGPU adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Variant {
    /// Workgroup sums through subgroup operations (wgpu's `SUBGROUP` feature) in the kernels
    /// that have them ([`Kernel::reduces`]).
    pub subgroups: bool,
    /// f16 data stored as WGSL `f16` (wgpu's `SHADER_F16` feature, `enable f16;`) instead of
    /// two halves per `u32`: plain loads and stores, no atomics. Arithmetic stays f32: a sum of
    /// the 1280 products of one projection output accumulated in f16 (11-bit significand) errs
    /// by about sqrt(1280) 2^-11 = 1.7e-2 relative, an NMSE near 3e-4, far above the suite's f16
    /// bound of 1e-5.
    pub native_f16: bool,
    /// Projections with rows of a multiple of 4 elements stage their operands in workgroup
    /// memory (`linear_vec4_tiled`, for GPUs) rather than loading them directly
    /// (`linear_vec4`, faster on CPU drivers). Needs no adapter feature.
    pub shared_tiles: bool,
}

/// The complete WGSL module of `kernel` for element type `dtype` (ignored by untyped kernels),
/// for every adapter; or `None` for an element type the kernels are not generated for (f64:
/// WGSL has no portable 64-bit float).
pub fn source(kernel: Kernel, dtype: DType) -> Option<String> {
    assemble(kernel, dtype, Variant::default())
}

/// [`source`] using the adapter features `variant` enables (the device must have them).
pub fn source_variant(kernel: Kernel, dtype: DType, variant: Variant) -> Option<String> {
    assemble(kernel, dtype, variant)
}

fn assemble(kernel: Kernel, dtype: DType, variant: Variant) -> Option<String> {
    let dtype = if kernel.is_typed() {
        FLOAT_DTYPES.contains(&dtype).then_some(dtype)?
    } else {
        DType::U32
    };
    let subgroups = variant.subgroups && kernel.reduces();
    let native_f16 = variant.native_f16 && dtype == DType::F16;
    let native = match dtype {
        DType::F16 if native_f16 => Some("f16"),
        DType::F16 | DType::BF16 => None,
        _ => Some("f32"),
    };
    let mut out = String::with_capacity(8192);
    if native_f16 {
        out.push_str("enable f16;\n\n");
    }
    out.push_str(&format!(
        "// engram-wgpu kernel `{}` for {}{}{}; generated by engram_wgpu::shaders.\n\n",
        kernel.name(),
        if kernel.is_typed() {
            dtype.name()
        } else {
            "u32 data"
        },
        if subgroups { ", with subgroups" } else { "" },
        if native_f16 {
            ", native f16 storage"
        } else {
            ""
        }
    ));
    out.push_str(COMMON_WGSL);
    out.push('\n');
    if native_f16 {
        out.push_str("fn narrow(v: f32) -> f32 {\n    return f32(f16(v));\n}\n");
    } else {
        out.push_str(dtype_helpers(dtype));
    }
    out.push_str("\n@group(0) @binding(0) var<storage, read> P: array<u32>;\n");
    for b in kernel.bindings() {
        declare(&mut out, b, native);
    }
    out.push('\n');
    if kernel.needs_packed_search() {
        out.push_str(PACKED_WGSL);
        out.push('\n');
    }
    let mut body = kernel.body().to_owned();
    if kernel.reduces() {
        if subgroups {
            out.push_str(REDUCE_SUBGROUPS_WGSL);
            body = body
                .replace(
                    "/*SUBGROUP_ARGS*/",
                    ",\n    @builtin(subgroup_invocation_id) sg_lane_in: u32, \
                     @builtin(subgroup_id) sg_id_in: u32,\n    \
                     @builtin(num_subgroups) sg_count_in: u32",
                )
                .replace(
                    "/*SUBGROUP_INIT*/",
                    "sg_lane = sg_lane_in;\n    sg_id = sg_id_in;\n    sg_count = sg_count_in;",
                );
        } else {
            out.push_str(REDUCE_PORTABLE_WGSL);
            body = body
                .replace(" /*SUBGROUP_ARGS*/", "")
                .replace("    /*SUBGROUP_INIT*/\n", "");
        }
        out.push('\n');
    }
    for part in kernel.shared_parts() {
        out.push_str(part);
        out.push('\n');
    }
    out.push_str(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_parses_and_validates_for_every_element_type() {
        let variants = [
            Variant::default(),
            Variant {
                subgroups: true,
                native_f16: true,
                shared_tiles: true,
            },
        ];
        for (&kernel, variant) in Kernel::ALL
            .iter()
            .flat_map(|k| variants.iter().map(move |v| (k, *v)))
        {
            let caps = if variant == Variant::default() {
                naga::valid::Capabilities::empty()
            } else {
                naga::valid::Capabilities::SUBGROUP | naga::valid::Capabilities::SHADER_FLOAT16
            };
            for dtype in FLOAT_DTYPES {
                let src = assemble(kernel, dtype, variant).unwrap();
                assert!(
                    !src.contains("SUBGROUP_"),
                    "placeholders left in {}",
                    kernel.name()
                );
                let module = naga::front::wgsl::parse_str(&src)
                    .unwrap_or_else(|e| panic!("{}: {}", kernel.name(), e.emit_to_string(&src)));
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{} {dtype}: {e:?}", kernel.name()));
                assert!(
                    module.entry_points.iter().any(|e| e.name == kernel.name()),
                    "{} has no entry point of its name",
                    kernel.name()
                );
                if !kernel.is_typed() {
                    break;
                }
            }
        }
    }

    #[test]
    fn f64_has_no_module() {
        assert!(source(Kernel::Linear, DType::F64).is_none());
        assert!(source(Kernel::HashRows, DType::F64).is_some());
    }

    #[test]
    fn bindings_are_numbered_from_one_in_order() {
        for &kernel in Kernel::ALL {
            for (i, b) in kernel.bindings().iter().enumerate() {
                assert_eq!(b.binding as usize, i + 1, "{}", kernel.name());
            }
        }
    }
}
