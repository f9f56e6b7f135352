//! Tokenizers: any HuggingFace `tokenizer.json`, and the compressed vocabulary built from it.

use std::path::{Path, PathBuf};

use engram_core::{CompressedVocab, CompressedVocabBuilder};
use tokenizers::Tokenizer;

use crate::error::{ModelError, Result};

/// The DeepSeek-V3 `tokenizer.json` shipped with this crate (128815 ids with the added tokens).
pub const DEEPSEEK_V3_TOKENIZER_JSON: &[u8] =
    include_bytes!("../assets/tokenizer-deepseek-v3/tokenizer.json");

/// A loaded HuggingFace tokenizer.
pub struct EngramTokenizer {
    inner: Tokenizer,
    source: PathBuf,
}

impl std::fmt::Debug for EngramTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngramTokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl EngramTokenizer {
    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Loads a `tokenizer.json` held in memory; `source` names it in errors.
    pub fn from_bytes(bytes: &[u8], source: impl AsRef<Path>) -> Result<Self> {
        let source = source.as_ref().to_path_buf();
        let inner = Tokenizer::from_bytes(bytes).map_err(|e| ModelError::Tokenizer {
            path: source.clone(),
            source: e,
        })?;
        Ok(EngramTokenizer { inner, source })
    }

    /// The DeepSeek-V3 tokenizer shipped with this crate.
    pub fn deepseek_v3() -> Result<Self> {
        Self::from_bytes(
            DEEPSEEK_V3_TOKENIZER_JSON,
            "<built-in DeepSeek-V3 tokenizer.json>",
        )
    }

    /// Number of ids, added tokens included (Python's `len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, with whatever special tokens the tokenizer's post-processor adds.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|source| ModelError::Tokenize {
                what: format!("{text:?}"),
                source,
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text one id decodes to on its own (special tokens kept).
    pub fn decode_one(&self, id: u32) -> Result<String> {
        self.inner
            .decode(&[id], false)
            .map_err(|source| ModelError::Tokenize {
                what: format!("id {id}"),
                source,
            })
    }

    /// The raw token string of an id (its entry in the vocabulary), if it has one.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Builds the compressed vocabulary exactly as the reference's `CompressedTokenizer`:
    /// ids `0..vocab_size()` in order, each decoded alone and normalised
    /// ([`engram_core::vocab::token_key`]).
    pub fn compressed_vocab(&self) -> Result<CompressedVocab> {
        let mut builder = CompressedVocabBuilder::new();
        for id in 0..self.vocab_size() {
            let id =
                u32::try_from(id).map_err(|_| engram_core::Error::Overflow { what: "token id" })?;
            let text = self.decode_one(id)?;
            let raw = self.token(id).unwrap_or_default();
            builder.push(&text, &raw)?;
        }
        Ok(builder.finish())
    }
}
