//! The backend proper: device buffers, the loaded module, one stream, and every op as a launch
//! of the PTX kernels. Inputs are validated exactly as the oracle validates them (same typed
//! errors), before any kernel writes.

use std::ffi::c_void;
use std::mem::size_of;

use cust::context::Context;
use cust::function::{BlockSize, GridSize};
use cust::memory::{AsyncCopyDestination, CopyDestination, DeviceBox, DeviceBuffer, LockedBox};
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};
use engram_core::hash::LayerHash;
use engram_core::reference::check;
use engram_core::{
    compose_engram_decode, compose_engram_prefill, Backend, Capabilities, DType, DeviceEngramLayer,
    DeviceEngramState, Element, EngramOps, Error, MoeConfig, MoeOps, PackedBatch, Result, Scalar,
    ScoreFunc, SeqLensFault,
};
use std::sync::Mutex;

use crate::fused::{is_fused, is_hopper, HashParams, ParamsCache, Workspace};
use crate::projection::{self, Projection};
use crate::{BACKEND_NAME, ENGRAM_PTX, FUSED_PTX};

pub(crate) const THREADS: u32 = 256;
pub(crate) const MAX_BLOCKS: u64 = 1 << 20;

/// The status word's value while no check has failed.
const NO_FAILURE: u64 = u64::MAX;

/// The backend's status word on the device, and the page-locked host word it is read back into
/// (a copy into page-locked memory is the driver's direct copy, without staging through a
/// pageable bounce buffer: the read-back every checked op waits for).
struct StatusWord {
    device: DeviceBox<u64>,
    host: LockedBox<u64>,
}

pub(crate) fn cuda_err(e: cust::error::CudaError) -> Error {
    Error::Backend {
        backend: BACKEND_NAME,
        message: e.to_string(),
    }
}

use check::len as check_len;

/// A buffer in device memory: `len` elements of `T`, optionally between two guard zones.
pub struct CudaBuffer<T> {
    raw: DeviceBuffer<u8>,
    guard: usize,
    pub(crate) len: usize,
    fill: T,
}

impl<T: Scalar> CudaBuffer<T> {
    /// The device address of the first usable element.
    pub fn device_ptr(&self) -> u64 {
        self.raw.as_device_ptr().as_raw() + (self.guard * size_of::<T>()) as u64
    }

    pub(crate) fn from_host(data: &[T], guard: usize, len: usize, fill: T) -> Result<Self> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        // cuMemAlloc rejects zero bytes: an empty buffer still owns a few.
        let raw = if bytes.is_empty() {
            DeviceBuffer::zeroed(8)
        } else {
            DeviceBuffer::from_slice(bytes)
        }
        .map_err(cuda_err)?;
        Ok(CudaBuffer {
            raw,
            guard,
            len,
            fill,
        })
    }

    /// Overwrites the buffer's elements with `data` (of the same length), waiting for the copy.
    /// With a [`crate::DecodeGraph`] this is how each step's ids and hidden states reach the
    /// buffers the graph reads.
    pub fn write(&mut self, data: &[T]) -> Result<()> {
        check_len("written data", data.len(), self.len)?;
        if data.is_empty() {
            return Ok(());
        }
        let start = self.guard * size_of::<T>();
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.raw
            .index(start..start + bytes.len())
            .copy_from(bytes)
            .map_err(cuda_err)
    }

    fn read_all(&self) -> Result<Vec<T>> {
        let total = self.len + 2 * self.guard;
        let mut out = vec![T::default(); total];
        if total > 0 {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
            self.raw
                .index(0..bytes.len())
                .copy_to(bytes)
                .map_err(cuda_err)?;
        }
        Ok(out)
    }
}

/// One kernel argument.
#[derive(Clone, Copy)]
pub(crate) enum Arg {
    U32(u32),
    U64(u64),
    F64(f64),
    /// A tensor map passed by value (`const __grid_constant__ TensorMap` in the kernel).
    Map(TensorMap),
}

/// A `CUtensorMap`: the 128 opaque, 64-byte aligned bytes `cuTensorMapEncodeTiled` writes and
/// a kernel takes by value (`TensorMap` in `kernels/hopper.cu`).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct TensorMap([u64; 16]);

extern "C" {
    // The driver's entry point (CUDA 12.0 on, drivers from 525), which `cust` does not wrap.
    fn cuTensorMapEncodeTiled(
        map: *mut TensorMap,
        dtype: std::ffi::c_int,
        rank: std::ffi::c_uint,
        address: *mut c_void,
        dims: *const u64,
        strides: *const u64,
        box_dim: *const std::ffi::c_uint,
        element_strides: *const std::ffi::c_uint,
        interleave: std::ffi::c_int,
        swizzle: std::ffi::c_int,
        l2_promotion: std::ffi::c_int,
        oob_fill: std::ffi::c_int,
    ) -> std::ffi::c_int;
}

/// A tensor map of a row-major `[rows, k]` matrix of 16-bit elements `T` (bf16 or f16) at device
/// address `address`, inside an allocation of `len` elements from there, read in boxes of 64
/// elements of k (128 bytes, the 128-byte swizzle: the tile layout of `kernels/common.cuh`'s
/// `tile_offset`) by `box_rows` rows, zeros outside the matrix.
pub(crate) fn matrix_tensor_map<T: Element>(
    address: u64,
    len: usize,
    rows: usize,
    k: usize,
    box_rows: usize,
) -> Result<TensorMap> {
    // CUtensorMapDataType: FLOAT16 6, BFLOAT16 9; CU_TENSOR_MAP_SWIZZLE_128B 3,
    // CU_TENSOR_MAP_L2_PROMOTION_L2_256B 3 (cuda.h).
    let dtype = match T::DTYPE {
        DType::F16 => 6,
        DType::BF16 => 9,
        other => {
            return Err(Error::UnsupportedDType {
                backend: BACKEND_NAME,
                dtype: other,
            })
        }
    };
    if rows == 0 || k == 0 || len < rows * k {
        return Err(Error::Backend {
            backend: BACKEND_NAME,
            message: format!("a tensor map of {rows} x {k} elements over a buffer of {len}"),
        });
    }
    let dims = [k as u64, rows as u64];
    let strides = [(k * size_of::<T>()) as u64];
    let box_dim = [64u32, u32_of("tensor map box rows", box_rows)?];
    let element_strides = [1u32, 1];
    let mut map = TensorMap([0; 16]);
    // SAFETY: `map` is a 64-byte aligned 128-byte CUtensorMap the call fills; the arrays hold
    // the rank (2) entries it reads (rank - 1 for the strides); the address is in a live device
    // allocation with the `rows * k` elements the map covers (the caller's `len`, checked
    // above). Encoding only records the address: the copies through the map read it. The driver
    // validates alignment and sizes and returns an error code rather than writing elsewhere.
    let status = unsafe {
        cuTensorMapEncodeTiled(
            &mut map,
            dtype,
            2,
            address as *mut c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            box_dim.as_ptr(),
            element_strides.as_ptr(),
            0,
            3,
            3,
            0,
        )
    };
    if status != 0 {
        return Err(Error::Backend {
            backend: BACKEND_NAME,
            message: format!("cuTensorMapEncodeTiled of a {rows} x {k} matrix: error {status}"),
        });
    }
    Ok(map)
}

pub(crate) fn ptr<T: Scalar>(b: &CudaBuffer<T>) -> Arg {
    Arg::U64(b.device_ptr())
}

fn opt_ptr<T: Scalar>(b: Option<&CudaBuffer<T>>) -> Arg {
    Arg::U64(b.map_or(0, CudaBuffer::device_ptr))
}

pub(crate) fn u32_of(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Overflow { what })
}

pub(crate) fn suffix(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F64 => Ok("f64"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        other => Err(Error::UnsupportedDType {
            backend: BACKEND_NAME,
            dtype: other,
        }),
    }
}

/// The CUDA backend: a context on device 0, the Engram module, one stream.
pub struct CudaBackend {
    module: Module,
    fused: Module,
    pub(crate) stream: Stream,
    params: ParamsCache,
    pub(crate) workspace: Workspace,
    /// Multiprocessors of the device, and the largest dynamic shared memory a block may opt in to.
    pub(crate) multiprocessors: usize,
    pub(crate) shared_optin: usize,
    /// The chosen wgmma projection's sm_90a module (`kernels/hopper.cu`, [`crate::HOPPER_PTX`]),
    /// loaded on sm_90 devices only.
    hopper: Option<Module>,
    /// The projection kernel, chosen once when the backend is made.
    pub(crate) projection: Projection,
    /// Whether a prefill's projection forms the gate's sums in its epilogue where the layer
    /// allows (`ENGRAM_CUDA_GATE`).
    pub(crate) gate_epilogue: bool,
    /// Whether a prefill gathers its rows into a matrix before the projection
    /// (`ENGRAM_CUDA_ROWS`).
    pub(crate) rows_first: bool,
    /// The word on-device checks record their first failure into; see [`CudaBackend::checked`].
    status: Mutex<StatusWord>,
    device: String,
    _context: Context,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.device)
            .field("projection", &self.projection)
            .field("gate_epilogue", &self.gate_epilogue)
            .field("rows_first", &self.rows_first)
            .finish()
    }
}

impl CudaBackend {
    /// Opens device 0 and loads the kernels; [`Error::NoDevice`] when there is no usable driver
    /// or device.
    pub fn new() -> Result<Self> {
        let no_device = |e: cust::error::CudaError| Error::NoDevice {
            backend: BACKEND_NAME,
            reason: e.to_string(),
        };
        let context = cust::quick_init().map_err(no_device)?;
        let handle = cust::device::Device::get_device(0).map_err(no_device)?;
        let device = handle.name().map_err(no_device)?;
        let multiprocessors = handle
            .get_attribute(cust::device::DeviceAttribute::MultiprocessorCount)
            .map_err(cuda_err)?
            .max(1) as usize;
        let mut optin = 0i32;
        // SAFETY: `optin` is a live i32 the call writes; the device handle comes from the driver.
        let status = unsafe {
            cust::sys::cuDeviceGetAttribute(
                &mut optin,
                cust::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                handle.as_raw(),
            )
        };
        let shared_optin = if status == cust::sys::CUresult::CUDA_SUCCESS {
            optin.max(0) as usize
        } else {
            48 * 1024
        };
        let capability = |a| handle.get_attribute(a).map_err(cuda_err);
        let sm90 = capability(cust::device::DeviceAttribute::ComputeCapabilityMajor)? == 9
            && capability(cust::device::DeviceAttribute::ComputeCapabilityMinor)? == 0;
        let module = Module::from_ptx(ENGRAM_PTX, &[]).map_err(cuda_err)?;
        let fused = Module::from_ptx(FUSED_PTX, &[]).map_err(cuda_err)?;
        let requested = std::env::var(projection::OVERRIDE).ok();
        let projection = Projection::choose(requested.as_deref(), sm90)?;
        // sm_90a code loads on sm_90 devices only (`choose` picks a wgmma kernel only there),
        // and only the chosen projection's module: the driver compiles what it loads.
        let hopper = match projection.hopper_ptx() {
            Some(ptx) => Some(Module::from_ptx(ptx, &[]).map_err(cuda_err)?),
            None => None,
        };
        let gate_epilogue =
            projection::gate_in_epilogue(std::env::var(projection::GATE_OVERRIDE).ok().as_deref())?;
        let rows_first =
            projection::rows_first(std::env::var(projection::ROWS_OVERRIDE).ok().as_deref())?;
        // The chosen projection's kernels, and the narrow mma.sync ones any layer falls back to
        // when the chosen kernel's shared memory does not fit it (`projection_for`).
        let used = if projection == Projection::Mma {
            vec![projection]
        } else {
            vec![projection, Projection::Mma]
        };
        for (p, kernel) in used
            .into_iter()
            .flat_map(|p| ["bf16", "f16"].map(|t| (p, t)))
            .flat_map(|(p, t)| p.kernels(t).into_iter().map(move |k| (p, k)))
        {
            let module = match (&hopper, p.needs_sm90a()) {
                (Some(m), true) => m,
                _ => &fused,
            };
            let f = module.get_function(&kernel).map_err(cuda_err)?;
            // SAFETY: the function handle is live (its module is owned by the backend); the
            // attribute only raises the dynamic shared memory a launch may ask for.
            let status = unsafe {
                cust::sys::cuFuncSetAttribute(
                    f.to_raw(),
                    cust::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared_optin as i32,
                )
            };
            if status != cust::sys::CUresult::CUDA_SUCCESS {
                return Err(Error::Backend {
                    backend: BACKEND_NAME,
                    message: format!("raising the shared memory limit of {kernel}: {status:?}"),
                });
            }
        }
        let stream = Stream::new(StreamFlags::DEFAULT, None).map_err(cuda_err)?;
        Ok(CudaBackend {
            module,
            fused,
            stream,
            params: ParamsCache::default(),
            workspace: Workspace::default(),
            multiprocessors,
            shared_optin,
            hopper,
            projection,
            gate_epilogue,
            rows_first,
            status: Mutex::new(StatusWord {
                device: DeviceBox::new(&NO_FAILURE).map_err(cuda_err)?,
                host: LockedBox::new(&NO_FAILURE).map_err(cuda_err)?,
            }),
            device,
            _context: context,
        })
    }

    pub(crate) fn launch(
        &self,
        kernel: &str,
        grid: impl Into<GridSize>,
        block: impl Into<BlockSize>,
        shared: u32,
        args: &[Arg],
    ) -> Result<()> {
        let module = if is_hopper(kernel) {
            self.hopper.as_ref().ok_or_else(|| Error::Backend {
                backend: BACKEND_NAME,
                message: format!("{kernel} needs an sm_90 device"),
            })?
        } else if is_fused(kernel) {
            &self.fused
        } else {
            &self.module
        };
        let function = module.get_function(kernel).map_err(cuda_err)?;
        // Each pointer addresses one argument's own value, in the width and little-endian layout
        // the kernel's parameter has (a tensor map's 128 bytes, 64-byte aligned).
        let mut storage = args.to_vec();
        let pointers: Vec<*mut c_void> = storage
            .iter_mut()
            .map(|a| match a {
                Arg::U32(v) => v as *mut u32 as *mut c_void,
                Arg::U64(v) => v as *mut u64 as *mut c_void,
                Arg::F64(v) => v as *mut f64 as *mut c_void,
                Arg::Map(m) => m as *mut TensorMap as *mut c_void,
            })
            .collect();
        // SAFETY: the kernel's parameter list (see kernels/engram.cu) matches `args` in number and
        // width; every pointer argument is a live device allocation sized for the launch; the
        // argument storage outlives the call, which copies the arguments before returning.
        unsafe {
            self.stream
                .launch(&function, grid, block, shared, &pointers[..])
                .map_err(cuda_err)?;
        }
        Ok(())
    }

    /// A grid-stride launch over `n` items.
    pub(crate) fn launch_n(&self, kernel: &str, n: u64, args: &[Arg]) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let blocks = n.div_ceil(u64::from(THREADS)).min(MAX_BLOCKS) as u32;
        self.launch(kernel, blocks, THREADS, 0, args)
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_err)
    }

    /// Runs `launch` with the device address of the backend's status word, then reads the word
    /// back (which waits for the launches): the first failure they recorded (their kernels
    /// `atomicMin` a flat index into it), if any. The word is all ones whenever it is not
    /// locked, so a check allocates nothing (`cuMemAlloc` and `cuMemFree` would synchronise the
    /// device) and the kernels launched after the check kernel can test it on the device
    /// (writing nothing after a failure) instead of the host reading it in between.
    pub(crate) fn checked(&self, launch: impl FnOnce(u64) -> Result<()>) -> Result<Option<u64>> {
        let mut guard = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let word = &mut *guard;
        let launched = launch(word.device.as_device_ptr().as_raw());
        let found = word
            .device
            .copy_to(&mut *word.host)
            .map(|()| *word.host)
            .map_err(cuda_err);
        // Back to all ones whatever happened (a failure found, or a launch or read that failed),
        // so that the next check starts clean.
        let reset = match found {
            Ok(NO_FAILURE) => Ok(()),
            _ => word.device.copy_from(&NO_FAILURE).map_err(cuda_err),
        };
        launched?;
        let found = found?;
        reset?;
        Ok((found != NO_FAILURE).then_some(found))
    }

    /// The first index `i` with `v[i] >= limit`, if any (a device-side scan).
    pub(crate) fn first_at_or_above(
        &self,
        v: &CudaBuffer<u32>,
        limit: u64,
    ) -> Result<Option<usize>> {
        if v.len == 0 {
            return Ok(None);
        }
        let found = self.checked(|first| {
            self.launch_n(
                "first_ge_u32",
                v.len as u64,
                &[
                    ptr(v),
                    Arg::U64(v.len as u64),
                    Arg::U64(limit),
                    Arg::U64(first),
                ],
            )
        })?;
        Ok(found.map(|i| i as usize))
    }

    pub(crate) fn host<T: Scalar>(&self, b: &CudaBuffer<T>) -> Result<Vec<T>> {
        self.to_vec(b)
    }

    /// The layer's hash parameters on the device (uploaded once per layer, then cached).
    pub(crate) fn hash_params(&self, layer: &LayerHash) -> Result<std::sync::Arc<HashParams>> {
        self.params
            .get(layer, |data| self.upload(data), |data| self.upload(data))
    }

    pub(crate) fn check_ids(&self, ids: &CudaBuffer<u32>, limit: u64) -> Result<()> {
        if let Some(position) = self.first_at_or_above(ids, limit)? {
            let id = self.host(ids)?[position];
            return Err(Error::IdOutOfRange {
                position,
                id: u64::from(id),
                limit,
            });
        }
        Ok(())
    }

    /// A packed batch's `cu_seqlens` (for `tokens` positions) and its ids below `vocab`, checked
    /// on the device (`first_bad_batch_entry`), then `then(status)`'s launches, which must write
    /// nothing when the word at `status` holds a fault; one read-back at the end: the oracle's
    /// error, the sequence lengths' before the ids', if any.
    pub(crate) fn check_batch_then(
        &self,
        ids: &CudaBuffer<u32>,
        cu_seqlens: &CudaBuffer<u32>,
        tokens: usize,
        vocab: u64,
        then: impl FnOnce(u64) -> Result<()>,
    ) -> Result<()> {
        if cu_seqlens.len == 0 {
            // Nothing to launch over: the oracle's error for an empty one.
            return Err(SeqLensFault::Empty.error());
        }
        let found = self.checked(|status| {
            self.launch_batch_check(ids, cu_seqlens, tokens, vocab, status)?;
            then(status)
        })?;
        match found {
            None => Ok(()),
            Some(word) => Err(self.batch_fault(word, ids, vocab)?),
        }
    }

    /// Launches `first_bad_batch_entry`: the first fault of `cu_seqlens` (for `tokens` positions,
    /// at least one entry) or of the ids (below `vocab`) into the status word at `status`, to be
    /// explained by [`Self::batch_fault`].
    pub(crate) fn launch_batch_check(
        &self,
        ids: &CudaBuffer<u32>,
        cu_seqlens: &CudaBuffer<u32>,
        tokens: usize,
        vocab: u64,
        status: u64,
    ) -> Result<()> {
        self.launch_n(
            "first_bad_batch_entry",
            cu_seqlens.len.max(ids.len) as u64,
            &[
                ptr(cu_seqlens),
                Arg::U64(cu_seqlens.len as u64),
                Arg::U64(tokens as u64),
                ptr(ids),
                Arg::U64(ids.len as u64),
                Arg::U64(vocab),
                Arg::U64(status),
            ],
        )
    }

    /// The oracle's error for a fault `first_bad_batch_entry` recorded: from the word alone
    /// (batch_fault_in_word), reading the bad id back from `ids` only for batches of 2^31 ids or
    /// more, whose words hold the position alone.
    pub(crate) fn batch_fault(
        &self,
        word: u64,
        ids: &CudaBuffer<u32>,
        vocab: u64,
    ) -> Result<Error> {
        match batch_fault_in_word(word, ids.len, vocab)? {
            Ok(error) => Ok(error),
            Err(position) => Ok(Error::IdOutOfRange {
                position,
                id: u64::from(self.host(ids)?[position]),
                limit: vocab,
            }),
        }
    }
    fn linear_raw<T: Element>(
        &self,
        x: &CudaBuffer<T>,
        w: &CudaBuffer<T>,
        bias: Option<&CudaBuffer<T>>,
        in_features: usize,
        out: &mut CudaBuffer<T>,
    ) -> Result<()> {
        let (rows, out_features) =
            check::linear(x.len, w.len, bias.map(|b| b.len), in_features, out.len)?;
        if rows == 0 || out_features == 0 {
            return Ok(());
        }
        let grid = (
            out_features.div_ceil(16) as u32,
            u32_of("linear rows", rows.div_ceil(16))?,
            1,
        );
        self.launch(
            &format!("linear_{}", suffix(T::DTYPE)?),
            grid,
            (16, 16, 1),
            0,
            &[
                ptr(x),
                ptr(w),
                opt_ptr(bias),
                Arg::U64(rows as u64),
                Arg::U32(u32_of("in", in_features)?),
                Arg::U32(u32_of("out", out_features)?),
                ptr(out),
            ],
        )
    }

    fn silu_mul<T: Element>(
        &self,
        a: &CudaBuffer<T>,
        b: &CudaBuffer<T>,
        h: &mut CudaBuffer<T>,
    ) -> Result<()> {
        self.launch_n(
            &format!("silu_mul_{}", suffix(T::DTYPE)?),
            a.len as u64,
            &[ptr(a), ptr(b), Arg::U64(a.len as u64), ptr(h)],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn routed_linear<T: Element>(
        &self,
        x: &CudaBuffer<T>,
        w: &CudaBuffer<T>,
        idx: &CudaBuffer<u32>,
        tokens: usize,
        k: usize,
        inputs: usize,
        outputs: usize,
        per_slot: bool,
        y: &mut CudaBuffer<T>,
    ) -> Result<()> {
        self.launch_n(
            &format!("routed_linear_{}", suffix(T::DTYPE)?),
            (tokens * k * outputs) as u64,
            &[
                ptr(x),
                ptr(w),
                ptr(idx),
                Arg::U64(tokens as u64),
                Arg::U32(u32_of("k", k)?),
                Arg::U32(u32_of("in", inputs)?),
                Arg::U32(u32_of("out", outputs)?),
                Arg::U32(u32::from(per_slot)),
                ptr(y),
            ],
        )
    }
}

impl Backend for CudaBackend {
    type Buffer<T: Scalar> = CudaBuffer<T>;

    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: BACKEND_NAME,
            device: self.device.clone(),
            float_dtypes: vec![DType::F32, DType::F64, DType::F16, DType::BF16],
        }
    }

    fn upload<T: Scalar>(&self, data: &[T]) -> Result<CudaBuffer<T>> {
        CudaBuffer::from_host(data, 0, data.len(), T::default())
    }

    fn zeros<T: Scalar>(&self, len: usize) -> Result<CudaBuffer<T>> {
        // Every `Scalar`'s zero is all zero bytes; cuMemAlloc rejects zero bytes.
        let raw = DeviceBuffer::zeroed((len * size_of::<T>()).max(8)).map_err(cuda_err)?;
        Ok(CudaBuffer {
            raw,
            guard: 0,
            len,
            fill: T::default(),
        })
    }

    fn guarded<T: Scalar>(&self, len: usize, guard: usize, fill: T) -> Result<CudaBuffer<T>> {
        CudaBuffer::from_host(&vec![fill; len + 2 * guard], guard, len, fill)
    }

    fn guards_intact<T: Scalar>(&self, buffer: &CudaBuffer<T>) -> Result<bool> {
        self.sync()?;
        let all = buffer.read_all()?;
        let fill = bytemuck::bytes_of(&buffer.fill);
        let g = buffer.guard;
        Ok(all[..g]
            .iter()
            .chain(&all[g + buffer.len..])
            .all(|v| bytemuck::bytes_of(v) == fill))
    }

    fn download<T: Scalar>(&self, buffer: &CudaBuffer<T>, out: &mut [T]) -> Result<()> {
        check_len("download destination", out.len(), buffer.len)?;
        self.sync()?;
        if out.is_empty() {
            return Ok(());
        }
        let start = buffer.guard * size_of::<T>();
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
        buffer
            .raw
            .index(start..start + bytes.len())
            .copy_to(bytes)
            .map_err(cuda_err)
    }

    fn copy<T: Scalar>(&self, src: &CudaBuffer<T>, dst: &mut CudaBuffer<T>) -> Result<()> {
        check_len("copy destination", dst.len, src.len)?;
        let bytes = src.len * size_of::<T>();
        if bytes == 0 {
            return Ok(());
        }
        let (from, to) = (src.guard * size_of::<T>(), dst.guard * size_of::<T>());
        let source = src.raw.index(from..from + bytes);
        let mut target = dst.raw.index(to..to + bytes);
        // SAFETY: both ranges lie inside live allocations of `bytes` bytes (checked lengths);
        // the copy is ordered on the backend's one stream after every kernel that writes `src`
        // and before every later one, and both buffers outlive it (a buffer's drop frees with
        // cuMemFree, which waits for the device's work on it).
        unsafe { target.async_copy_from(&source, &self.stream) }.map_err(cuda_err)
    }

    fn len<T: Scalar>(&self, buffer: &CudaBuffer<T>) -> usize {
        buffer.len
    }

    fn synchronize(&self) -> Result<()> {
        self.sync()
    }
}

impl EngramOps for CudaBackend {
    fn engram_prefill<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        ids: &CudaBuffer<u32>,
        cu_seqlens: &CudaBuffer<u32>,
        hidden: &CudaBuffer<T>,
        out: &mut CudaBuffer<T>,
        mut gates: Option<&mut CudaBuffer<T>>,
        mut state: Option<&mut DeviceEngramState<Self, T>>,
    ) -> Result<()> {
        if self.fused_prefill(
            layer,
            ids,
            cu_seqlens,
            hidden,
            out,
            gates.as_deref_mut(),
            state.as_deref_mut(),
        )? {
            return Ok(());
        }
        compose_engram_prefill(self, layer, ids, cu_seqlens, hidden, out, gates, state)
    }

    fn engram_decode<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        ids: &CudaBuffer<u32>,
        hidden: &CudaBuffer<T>,
        state: &mut DeviceEngramState<Self, T>,
        out: &mut CudaBuffer<T>,
        mut gates: Option<&mut CudaBuffer<T>>,
    ) -> Result<()> {
        if self.fused_decode(layer, ids, hidden, state, out, gates.as_deref_mut())? {
            return Ok(());
        }
        compose_engram_decode(self, layer, ids, hidden, state, out, gates)
    }

    fn compress_ids(
        &self,
        lookup: &CudaBuffer<u32>,
        raw: &CudaBuffer<u32>,
        out: &mut CudaBuffer<u32>,
    ) -> Result<()> {
        check_len("compressed ids", out.len, raw.len)?;
        self.check_ids(raw, lookup.len as u64)?;
        self.launch_n(
            "compress_ids",
            raw.len as u64,
            &[ptr(lookup), ptr(raw), Arg::U64(raw.len as u64), ptr(out)],
        )
    }

    fn hash(
        &self,
        layer: &LayerHash,
        heads_per_order: usize,
        compressed_pad_id: u32,
        compressed_vocab: u64,
        ids: &CudaBuffer<u32>,
        cu_seqlens: &CudaBuffer<u32>,
        rows: &mut CudaBuffer<u32>,
    ) -> Result<()> {
        let heads = (layer.multipliers.len() - 1) * heads_per_order;
        // The batch's faults first, as the oracle reports them; then the output's length.
        let fits = rows.len == ids.len * heads;
        let params = self.hash_params(layer)?;
        self.check_batch_then(ids, cu_seqlens, ids.len, compressed_vocab, |status| {
            if !fits {
                return Ok(());
            }
            self.launch_hash(
                layer,
                &params,
                heads_per_order,
                compressed_pad_id,
                ids,
                cu_seqlens,
                status,
                rows.device_ptr(),
                0,
            )
        })?;
        check_len("hash output", rows.len, ids.len * heads)
    }

    fn hash_decode(
        &self,
        layer: &LayerHash,
        heads_per_order: usize,
        compressed_vocab: u64,
        history: &CudaBuffer<u32>,
        ids: &CudaBuffer<u32>,
        rows: &mut CudaBuffer<u32>,
    ) -> Result<()> {
        let seqs = check::hash_decode(layer, heads_per_order, history.len, ids.len, rows.len)?;
        let params = self.hash_params(layer)?;
        // The check, then the hash, which writes nothing if the check found a bad id: one
        // read-back for both.
        self.check_window_ids_then(ids, history, compressed_vocab, |status| {
            if seqs == 0 {
                return Ok(());
            }
            self.launch_hash_decode(
                layer,
                &params,
                heads_per_order,
                history,
                ids,
                status,
                rows.device_ptr(),
            )
        })
    }

    fn gather_rows<T: Element>(
        &self,
        table: &CudaBuffer<T>,
        d_head: usize,
        layer: &LayerHash,
        rows: &CudaBuffer<u32>,
        out: &mut CudaBuffer<T>,
    ) -> Result<()> {
        check::gather_rows(table.len, d_head, layer, rows.len, out.len)?;
        let heads = layer.table_sizes.len();
        if rows.len == 0 {
            return Ok(());
        }
        let params = self.hash_params(layer)?;
        // The check, then the gather, which writes nothing if the check found a bad row: one
        // read-back for both.
        let bad = self.checked(|first| {
            self.launch_n(
                "first_row_beyond",
                rows.len as u64,
                &[
                    ptr(rows),
                    Arg::U64(rows.len as u64),
                    Arg::U32(u32_of("heads", heads)?),
                    ptr(&params.sizes),
                    Arg::U64(first),
                ],
            )?;
            if self.launch_gather16(
                table,
                d_head,
                &params,
                rows.device_ptr(),
                rows.len,
                first,
                out.device_ptr(),
            )? {
                return Ok(());
            }
            self.launch_n(
                &format!("gather_{}", suffix(T::DTYPE)?),
                (rows.len * d_head) as u64,
                &[
                    ptr(table),
                    Arg::U32(u32_of("d_head", d_head)?),
                    ptr(&params.offsets),
                    Arg::U32(heads as u32),
                    ptr(rows),
                    Arg::U64(rows.len as u64),
                    Arg::U64(first),
                    ptr(out),
                ],
            )
        })?;
        match bad {
            None => Ok(()),
            Some(i) => {
                let i = i as usize;
                Err(check::row_out_of_range(
                    i,
                    self.host(rows)?[i],
                    &layer.table_sizes,
                ))
            }
        }
    }

    fn rms_norm<T: Element>(
        &self,
        x: &CudaBuffer<T>,
        weight: &CudaBuffer<T>,
        d: usize,
        eps: f64,
        out: &mut CudaBuffer<T>,
    ) -> Result<()> {
        let vectors = check::rms_norm(x.len, weight.len, d, out.len)?;
        if vectors == 0 {
            return Ok(());
        }
        let acc = if T::DTYPE == DType::F64 { 8 } else { 4 };
        self.launch(
            &format!("rms_norm_{}", suffix(T::DTYPE)?),
            vectors.min(MAX_BLOCKS as usize) as u32,
            THREADS,
            3 * THREADS * acc,
            &[
                ptr(x),
                ptr(weight),
                Arg::U64(vectors as u64),
                Arg::U32(u32_of("d", d)?),
                Arg::U32((weight.len / d) as u32),
                Arg::F64(eps),
                ptr(out),
            ],
        )
    }

    fn linear<T: Element>(
        &self,
        x: &CudaBuffer<T>,
        weight: &CudaBuffer<T>,
        bias: Option<&CudaBuffer<T>>,
        in_features: usize,
        out: &mut CudaBuffer<T>,
    ) -> Result<()> {
        self.linear_raw(x, weight, bias, in_features, out)
    }

    fn gate<T: Element>(
        &self,
        proj: &CudaBuffer<T>,
        hidden: &CudaBuffer<T>,
        key_norm: &CudaBuffer<T>,
        query_norm: &CudaBuffer<T>,
        m: usize,
        d: usize,
        value: &mut CudaBuffer<T>,
        alpha: &mut CudaBuffer<T>,
    ) -> Result<()> {
        let tokens = check::gate(
            proj.len,
            hidden.len,
            key_norm.len,
            query_norm.len,
            m,
            d,
            value.len,
            alpha.len,
        )?;
        if tokens == 0 {
            return Ok(());
        }
        let acc = if T::DTYPE == DType::F64 { 8 } else { 4 };
        self.launch(
            &format!("gate_{}", suffix(T::DTYPE)?),
            (tokens * m).min(MAX_BLOCKS as usize) as u32,
            THREADS,
            3 * THREADS * acc,
            &[
                ptr(proj),
                ptr(hidden),
                ptr(key_norm),
                ptr(query_norm),
                Arg::U64(tokens as u64),
                Arg::U32(u32_of("m", m)?),
                Arg::U32(u32_of("d", d)?),
                ptr(value),
                ptr(alpha),
            ],
        )
    }

    fn short_conv<T: Element>(
        &self,
        normed: &CudaBuffer<T>,
        value: &CudaBuffer<T>,
        weight: &CudaBuffer<T>,
        channels: usize,
        kernel: usize,
        dilation: usize,
        cu_seqlens: &CudaBuffer<u32>,
        out: &mut CudaBuffer<T>,
    ) -> Result<()> {
        let tokens =
            check::short_conv(normed.len, value.len, weight.len, channels, kernel, out.len)?;
        let cu = self.host(cu_seqlens)?;
        let batch = PackedBatch::new(&cu, tokens)?;
        self.launch_n(
            &format!("short_conv_{}", suffix(T::DTYPE)?),
            normed.len as u64,
            &[
                ptr(normed),
                ptr(value),
                ptr(weight),
                Arg::U64(tokens as u64),
                Arg::U32(u32_of("channels", channels)?),
                Arg::U32(u32_of("kernel", kernel)?),
                Arg::U32(u32_of("dilation", dilation)?),
                ptr(cu_seqlens),
                Arg::U32(u32_of("sequences", batch.num_sequences())?),
                ptr(out),
            ],
        )
    }

    fn short_conv_decode<T: Element>(
        &self,
        normed: &CudaBuffer<T>,
        value: &CudaBuffer<T>,
        weight: &CudaBuffer<T>,
        channels: usize,
        kernel: usize,
        dilation: usize,
        history: &mut CudaBuffer<T>,
        out: &mut CudaBuffer<T>,
    ) -> Result<()> {
        let seqs = check::short_conv_decode(
            normed.len,
            value.len,
            weight.len,
            channels,
            kernel,
            dilation,
            history.len,
            out.len,
        )?;
        self.launch_n(
            &format!("short_conv_decode_{}", suffix(T::DTYPE)?),
            normed.len as u64,
            &[
                ptr(normed),
                ptr(value),
                ptr(weight),
                Arg::U64(seqs as u64),
                Arg::U32(u32_of("channels", channels)?),
                Arg::U32(u32_of("kernel", kernel)?),
                Arg::U32(u32_of("dilation", dilation)?),
                ptr(history),
                ptr(out),
            ],
        )
    }

    fn capture_state<T: Element>(
        &self,
        ids: &CudaBuffer<u32>,
        cu_seqlens: &CudaBuffer<u32>,
        normed: &CudaBuffer<T>,
        keep: usize,
        hist: usize,
        channels: usize,
        pad: u32,
        state_ids: &mut CudaBuffer<u32>,
        state_conv: &mut CudaBuffer<T>,
    ) -> Result<()> {
        let cu = self.host(cu_seqlens)?;
        let batch = PackedBatch::new(&cu, ids.len)?;
        let seqs = batch.num_sequences();
        check::capture_state(
            ids.len,
            seqs,
            normed.len,
            keep,
            hist,
            channels,
            state_ids.len,
            state_conv.len,
        )?;
        self.launch_n(
            "capture_ids",
            (seqs * keep) as u64,
            &[
                ptr(ids),
                ptr(cu_seqlens),
                Arg::U64(seqs as u64),
                Arg::U32(u32_of("keep", keep)?),
                Arg::U32(pad),
                Arg::U64(0),
                ptr(state_ids),
            ],
        )?;
        self.launch_n(
            &format!("capture_conv_{}", suffix(T::DTYPE)?),
            (seqs * hist * channels) as u64,
            &[
                ptr(normed),
                ptr(cu_seqlens),
                Arg::U64(seqs as u64),
                Arg::U32(u32_of("hist", hist)?),
                Arg::U32(u32_of("channels", channels)?),
                ptr(state_conv),
            ],
        )
    }

    fn push_ids(
        &self,
        history: &mut CudaBuffer<u32>,
        ids: &CudaBuffer<u32>,
        keep: usize,
    ) -> Result<()> {
        check::push_ids(history.len, ids.len, keep)?;
        self.launch_n(
            "push_ids",
            ids.len as u64,
            &[
                ptr(history),
                ptr(ids),
                Arg::U64(ids.len as u64),
                Arg::U32(u32_of("keep", keep)?),
                // No status word: the ids were validated.
                Arg::U64(0),
            ],
        )
    }
}

impl MoeOps for CudaBackend {
    fn moe_scores<T: Element>(
        &self,
        x: &CudaBuffer<T>,
        gate_weight: &CudaBuffer<T>,
        dim: usize,
        score_func: ScoreFunc,
        scores: &mut CudaBuffer<T>,
    ) -> Result<()> {
        let mut logits = self.zeros::<T>(scores.len)?;
        self.linear_raw(x, gate_weight, None, dim, &mut logits)?;
        let experts = gate_weight.len / dim;
        let tokens = scores.len.checked_div(experts).unwrap_or(0);
        self.launch_n(
            &format!("scores_act_{}", suffix(T::DTYPE)?),
            tokens as u64,
            &[
                ptr(&logits),
                Arg::U64(tokens as u64),
                Arg::U32(u32_of("experts", experts)?),
                Arg::U32(u32::from(score_func == ScoreFunc::Softmax)),
                ptr(scores),
            ],
        )?;
        self.sync()
    }

    fn moe_route<T: Element>(
        &self,
        scores: &CudaBuffer<T>,
        bias: &CudaBuffer<T>,
        config: &MoeConfig,
        weights: &mut CudaBuffer<T>,
        indices: &mut CudaBuffer<u32>,
    ) -> Result<()> {
        let tokens = check::moe_route(scores.len, bias.len, config, weights.len, indices.len)?;
        let (e, k) = (config.n_routed_experts, config.n_activated_experts);
        if e > 1024 || config.n_expert_groups > 64 {
            return Err(Error::Backend {
                backend: BACKEND_NAME,
                message: "routing supports at most 1024 experts in at most 64 groups".into(),
            });
        }
        let bias_ptr = if bias.len == 0 {
            Arg::U64(0)
        } else {
            ptr(bias)
        };
        self.launch_n(
            &format!("route_{}", suffix(T::DTYPE)?),
            tokens as u64,
            &[
                ptr(scores),
                bias_ptr,
                Arg::U64(tokens as u64),
                Arg::U32(e as u32),
                Arg::U32(config.n_expert_groups as u32),
                Arg::U32(config.n_limited_groups as u32),
                Arg::U32(k as u32),
                Arg::U32(u32::from(config.score_func == ScoreFunc::Sigmoid)),
                Arg::F64(config.route_scale),
                ptr(weights),
                ptr(indices),
            ],
        )
    }

    fn expert_ffn<T: Element>(
        &self,
        x: &CudaBuffer<T>,
        w1: &CudaBuffer<T>,
        w2: &CudaBuffer<T>,
        w3: &CudaBuffer<T>,
        dim: usize,
        out: &mut CudaBuffer<T>,
    ) -> Result<()> {
        let (rows, inter) = check::expert_ffn(x.len, w1.len, w2.len, w3.len, dim)?;
        let mut a = self.zeros::<T>(rows * inter)?;
        let mut b = self.zeros::<T>(rows * inter)?;
        self.linear_raw(x, w1, None, dim, &mut a)?;
        self.linear_raw(x, w3, None, dim, &mut b)?;
        let mut h = self.zeros::<T>(rows * inter)?;
        self.silu_mul(&a, &b, &mut h)?;
        self.linear_raw(&h, w2, None, inter, out)?;
        self.sync()
    }

    fn routed_experts<T: Element>(
        &self,
        x: &CudaBuffer<T>,
        w1: &CudaBuffer<T>,
        w2: &CudaBuffer<T>,
        w3: &CudaBuffer<T>,
        indices: &CudaBuffer<u32>,
        dim: usize,
        inter: usize,
        out: &mut CudaBuffer<T>,
    ) -> Result<()> {
        let (tokens, k, experts) = check::routed_experts(
            x.len,
            w1.len,
            w2.len,
            w3.len,
            indices.len,
            dim,
            inter,
            out.len,
        )?;
        if let Some(position) = self.first_at_or_above(indices, experts as u64)? {
            let id = self.host(indices)?[position];
            return Err(Error::IdOutOfRange {
                position,
                id: u64::from(id),
                limit: experts as u64,
            });
        }
        let mut a = self.zeros::<T>(tokens * k * inter)?;
        let mut b = self.zeros::<T>(tokens * k * inter)?;
        self.routed_linear(x, w1, indices, tokens, k, dim, inter, false, &mut a)?;
        self.routed_linear(x, w3, indices, tokens, k, dim, inter, false, &mut b)?;
        let mut h = self.zeros::<T>(tokens * k * inter)?;
        self.silu_mul(&a, &b, &mut h)?;
        self.routed_linear(&h, w2, indices, tokens, k, inter, dim, true, out)?;
        self.sync()
    }

    fn moe_combine<T: Element>(
        &self,
        expert_out: &CudaBuffer<T>,
        weights: &CudaBuffer<T>,
        shared: &CudaBuffer<T>,
        dim: usize,
        out: &mut CudaBuffer<T>,
    ) -> Result<()> {
        let (tokens, k) =
            check::moe_combine(expert_out.len, weights.len, shared.len, dim, out.len)?;
        if tokens == 0 {
            return Ok(());
        }
        let shared_ptr = if shared.len == 0 {
            Arg::U64(0)
        } else {
            ptr(shared)
        };
        self.launch_n(
            &format!("combine_{}", suffix(T::DTYPE)?),
            out.len as u64,
            &[
                ptr(expert_out),
                ptr(weights),
                shared_ptr,
                Arg::U64(tokens as u64),
                Arg::U32(u32_of("k", k)?),
                Arg::U32(u32_of("dim", dim)?),
                ptr(out),
            ],
        )
    }
}

/// What a `first_bad_batch_entry` word says about a batch of `n_ids` ids: the oracle's error, or
/// (`Err`) the position of a bad id whose value the word does not hold (batches of 2^31 ids or
/// more).
pub(crate) fn batch_fault_in_word(
    word: u64,
    n_ids: usize,
    vocab: u64,
) -> Result<std::result::Result<Error, usize>> {
    if word >> 63 == 0 {
        let fault = match word {
            0 => SeqLensFault::Start,
            1 => SeqLensFault::Decreasing,
            2 => SeqLensFault::End,
            _ => {
                return Err(Error::Backend {
                    backend: BACKEND_NAME,
                    message: format!("first_bad_batch_entry recorded {word:#x}, no fault it knows"),
                })
            }
        };
        return Ok(Ok(fault.error()));
    }
    let rest = word & !(1 << 63);
    if (n_ids as u64) < 1 << 31 {
        Ok(Ok(Error::IdOutOfRange {
            position: (rest >> 32) as usize,
            id: rest & 0xffff_ffff,
            limit: vocab,
        }))
    } else {
        Ok(Err(rest as usize))
    }
}
