//! Packed variable-length batches: `S` sequences laid end to end in one id buffer of length `T`,
//! described by `cu_seqlens: [S + 1]` (the start of each sequence, then `T`).

use core::ops::Range;

use crate::error::{Error, Result};

/// A validated view of `cu_seqlens`: starts at 0, never decreases, ends at the batch length.
/// Empty sequences are allowed; an empty batch is `cu_seqlens = [0]`.
#[derive(Debug, Clone, Copy)]
pub struct PackedBatch<'a> {
    cu_seqlens: &'a [u32],
}

/// What makes a `cu_seqlens` not a packed batch, in the order [`PackedBatch::new`] tests it (the
/// first that applies is the one reported). Backends that check `cu_seqlens` on a device report
/// the fault they found through [`SeqLensFault::error`], as the host check would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqLensFault {
    /// No entry at all.
    Empty,
    /// The first entry is not 0.
    Start,
    /// An entry is smaller than the one before it.
    Decreasing,
    /// The last entry is not the batch's length.
    End,
}

impl SeqLensFault {
    /// The fault as [`Error::InvalidSeqLens`].
    pub fn error(self) -> Error {
        let reason = match self {
            SeqLensFault::Empty => "must hold at least one entry (0 for an empty batch)",
            SeqLensFault::Start => "must start at 0",
            SeqLensFault::Decreasing => "must not decrease",
            SeqLensFault::End => "must end at the number of tokens in the batch",
        };
        Error::InvalidSeqLens { reason }
    }
}

impl<'a> PackedBatch<'a> {
    /// Checks `cu_seqlens` against a batch of `total_tokens` positions.
    pub fn new(cu_seqlens: &'a [u32], total_tokens: usize) -> Result<Self> {
        let fault = match cu_seqlens.first() {
            None => Some(SeqLensFault::Empty),
            Some(&first) if first != 0 => Some(SeqLensFault::Start),
            _ if cu_seqlens.windows(2).any(|w| w[1] < w[0]) => Some(SeqLensFault::Decreasing),
            _ if cu_seqlens.last().map(|&l| l as usize) != Some(total_tokens) => {
                Some(SeqLensFault::End)
            }
            _ => None,
        };
        match fault {
            Some(fault) => Err(fault.error()),
            None => Ok(PackedBatch { cu_seqlens }),
        }
    }

    /// Number of sequences `S`.
    pub fn num_sequences(&self) -> usize {
        self.cu_seqlens.len() - 1
    }

    /// Total number of positions `T`.
    pub fn num_tokens(&self) -> usize {
        self.cu_seqlens[self.cu_seqlens.len() - 1] as usize
    }

    /// The positions of sequence `s` inside the packed buffer.
    ///
    /// # Panics
    /// If `s >= self.num_sequences()`.
    pub fn sequence(&self, s: usize) -> Range<usize> {
        self.cu_seqlens[s] as usize..self.cu_seqlens[s + 1] as usize
    }

    /// The positions of every sequence, in order.
    pub fn sequences(&self) -> impl ExactSizeIterator<Item = Range<usize>> + 'a {
        self.cu_seqlens
            .windows(2)
            .map(|w| w[0] as usize..w[1] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_batches_including_empty_ones() {
        let b = PackedBatch::new(&[0, 3, 3, 5], 5).unwrap();
        assert_eq!(b.num_sequences(), 3);
        assert_eq!(
            b.sequences().collect::<alloc::vec::Vec<_>>(),
            [0..3, 3..3, 3..5]
        );
        assert_eq!(PackedBatch::new(&[0], 0).unwrap().num_sequences(), 0);
    }

    #[test]
    fn rejects_malformed_seqlens() {
        for (cu, t) in [
            (&[][..], 0),
            (&[1, 3][..], 3),
            (&[0, 3, 2, 5][..], 5),
            (&[0, 4][..], 5),
        ] {
            assert!(
                matches!(PackedBatch::new(cu, t), Err(Error::InvalidSeqLens { .. })),
                "{cu:?}"
            );
        }
    }
}
