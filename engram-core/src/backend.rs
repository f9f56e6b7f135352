//! The device contract every backend implements: buffers, transfers, synchronisation and
//! capability queries. The op families ([`crate::ops::EngramOps`], [`crate::ops::MoeOps`]) build on
//! it.

use alloc::string::String;
use alloc::vec::Vec;

use crate::dtype::{DType, Scalar};
use crate::error::Result;

/// What a backend offers, asked before running anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend's name (`"cpu"`, `"wgpu"`, `"cuda"`, ...).
    pub backend: &'static str,
    /// The device it runs on, as the driver names it.
    pub device: String,
    /// Element types its float kernels accept for tables, weights and activations.
    pub float_dtypes: Vec<DType>,
}

/// A compute device with its own memory.
///
/// Buffers are typed and sized at creation; every op checks the lengths of the buffers it gets
/// against the shapes its parameters imply and answers a mismatch with
/// [`crate::Error::ShapeMismatch`] before touching any memory. Ops may run asynchronously:
/// [`Backend::download`] and [`Backend::synchronize`] wait for all work queued before them.
pub trait Backend: Sized + Send + Sync {
    /// A buffer of `len` elements of `T` in the device's memory.
    type Buffer<T: Scalar>: Send + Sync;

    /// The backend's name.
    fn name(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Whether float kernels accept `dtype`.
    fn supports_dtype(&self, dtype: DType) -> bool {
        !dtype.is_float() || self.capabilities().float_dtypes.contains(&dtype)
    }

    /// A new buffer holding a copy of `data`.
    fn upload<T: Scalar>(&self, data: &[T]) -> Result<Self::Buffer<T>>;

    /// A new buffer holding `data`, which the backend may keep instead of copying (the CPU
    /// backend does, so a multi-gigabyte table is not held twice).
    fn upload_vec<T: Scalar>(&self, data: Vec<T>) -> Result<Self::Buffer<T>> {
        self.upload(&data)
    }

    /// A new buffer of `len` zeros.
    fn zeros<T: Scalar>(&self, len: usize) -> Result<Self::Buffer<T>>;

    /// A buffer of `len` elements, all `fill`, between two guard zones of `guard` elements each
    /// that also hold `fill`. Ops see only the `len` usable elements; [`Backend::guards_intact`]
    /// tells whether anything wrote into the guards. The conformance suite allocates every output
    /// this way to catch out-of-bounds writes.
    fn guarded<T: Scalar>(&self, len: usize, guard: usize, fill: T) -> Result<Self::Buffer<T>>;

    /// Whether the guard zones of a buffer made by [`Backend::guarded`] still hold their fill
    /// value, bit for bit (`true` for a buffer without guards).
    fn guards_intact<T: Scalar>(&self, buffer: &Self::Buffer<T>) -> Result<bool>;

    /// Copies a buffer back to the host (`out.len()` must equal the buffer's length).
    fn download<T: Scalar>(&self, buffer: &Self::Buffer<T>, out: &mut [T]) -> Result<()>;

    /// Copies `src` into `dst` on the device (equal lengths).
    fn copy<T: Scalar>(&self, src: &Self::Buffer<T>, dst: &mut Self::Buffer<T>) -> Result<()>;

    /// The number of elements of a buffer.
    fn len<T: Scalar>(&self, buffer: &Self::Buffer<T>) -> usize;

    /// Waits for every queued op to finish.
    fn synchronize(&self) -> Result<()>;

    /// Copies a buffer back into a new vector.
    fn to_vec<T: Scalar>(&self, buffer: &Self::Buffer<T>) -> Result<Vec<T>> {
        let mut out = alloc::vec![T::default(); self.len(buffer)];
        self.download(buffer, &mut out)?;
        Ok(out)
    }
}
