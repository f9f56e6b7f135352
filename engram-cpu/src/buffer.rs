//! Host buffers with optional guard zones.

use std::ops::{Deref, DerefMut};

use engram_core::Scalar;

/// A CPU "device" buffer: a vector whose usable part may sit between two guard zones.
///
/// It dereferences to the usable elements only, so kernels written over slices cannot reach the
/// guards; [`CpuBuffer::raw_mut`] exposes the whole allocation for tests of the guard mechanism.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBuffer<T> {
    data: Vec<T>,
    guard: usize,
    fill: T,
}

impl<T: Scalar> CpuBuffer<T> {
    /// A buffer without guards that owns `data`.
    pub fn from_vec(data: Vec<T>) -> Self {
        CpuBuffer {
            data,
            guard: 0,
            fill: T::default(),
        }
    }

    /// `len` elements of `fill` between two guards of `guard` elements of `fill`.
    pub fn guarded(len: usize, guard: usize, fill: T) -> Self {
        CpuBuffer {
            data: vec![fill; len + 2 * guard],
            guard,
            fill,
        }
    }

    /// Whether both guard zones still hold the fill value, bit for bit.
    pub fn guards_intact(&self) -> bool {
        let fill = bytemuck::bytes_of(&self.fill);
        let (head, rest) = self.data.split_at(self.guard);
        let tail = &rest[rest.len() - self.guard..];
        head.iter()
            .chain(tail)
            .all(|v| bytemuck::bytes_of(v) == fill)
    }

    /// The whole allocation, guards included, and the index of the first usable element.
    pub fn raw_mut(&mut self) -> (&mut [T], usize) {
        (&mut self.data, self.guard)
    }

    /// The usable elements as a new vector.
    pub fn into_vec(mut self) -> Vec<T> {
        if self.guard == 0 {
            return self.data;
        }
        let end = self.data.len() - self.guard;
        self.data.truncate(end);
        self.data.split_off(self.guard)
    }
}

impl<T> Deref for CpuBuffer<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.data[self.guard..self.data.len() - self.guard]
    }
}

impl<T> DerefMut for CpuBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let end = self.data.len() - self.guard;
        &mut self.data[self.guard..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_catch_writes_on_either_side_only() {
        let mut b = CpuBuffer::guarded(4, 2, 7u32);
        assert_eq!(b.len(), 4);
        b.copy_from_slice(&[1, 2, 3, 4]);
        assert!(b.guards_intact());
        let (raw, start) = b.raw_mut();
        raw[start + 4] = 0;
        assert!(!b.guards_intact());
        let mut c = CpuBuffer::guarded(3, 1, f32::NAN);
        assert!(c.guards_intact(), "NaN fill compares bit for bit");
        let (raw, _) = c.raw_mut();
        raw[0] = 1.0;
        assert!(!c.guards_intact());
        assert_eq!(CpuBuffer::guarded(2, 3, 5u32).into_vec(), [5, 5]);
    }
}
