//! Splitting a buffer of concatenated batches (a fetch response, a log segment) into batches.

use std::iter::FusedIterator;

use crate::header::{BATCH_LENGTH_AT, LOG_OVERHEAD, MIN_BATCH_LENGTH};
use crate::CodecError;

/// Iterator over the batches in a buffer, from [`split_batches`] or [`split_batches_lenient`].
///
/// Each item is the exact byte range of one batch, framed by its `batchLength` only: run
/// [`crate::validate_batch`] on it to check the rest. After an error it yields nothing more.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    rest: &'a [u8],
    lenient: bool,
    finished: bool,
}

impl<'a> Batches<'a> {
    /// The bytes not yet yielded: after a stop, the partial (or bad) trailing batch.
    pub fn remainder(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<&'a [u8], CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished || self.rest.is_empty() {
            return None;
        }
        let rest = self.rest;
        let partial = match rest.get(BATCH_LENGTH_AT..LOG_OVERHEAD) {
            None => CodecError::HeaderTruncated {
                needed: LOG_OVERHEAD,
                available: rest.len(),
            },
            Some(len) => {
                let mut be = [0u8; 4];
                be.copy_from_slice(len);
                let batch_length = i32::from_be_bytes(be);
                if batch_length < MIN_BATCH_LENGTH {
                    // Not a partial batch but a corrupt one: an error even when lenient.
                    self.finished = true;
                    return Some(Err(CodecError::BadLength(batch_length)));
                }
                let total = LOG_OVERHEAD + batch_length as usize;
                match rest.split_at_checked(total) {
                    Some((batch, tail)) => {
                        self.rest = tail;
                        return Some(Ok(batch));
                    }
                    None => CodecError::Truncated {
                        needed: total,
                        available: rest.len(),
                    },
                }
            }
        };
        self.finished = true;
        if self.lenient {
            None
        } else {
            Some(Err(partial))
        }
    }
}

impl FusedIterator for Batches<'_> {}

/// Splits a buffer holding zero or more concatenated batches; each item is the exact byte
/// range of one batch. A truncated trailing batch is an error ([`CodecError::Truncated`] or
/// [`CodecError::HeaderTruncated`]), and so is a `batchLength` below 49.
pub fn split_batches(buf: &[u8]) -> Batches<'_> {
    Batches {
        rest: buf,
        lenient: false,
        finished: false,
    }
}

/// Like [`split_batches`], but stops without an error at a partial trailing batch, as a
/// Kafka fetch response may end mid-batch ([`Batches::remainder`] then holds it). A
/// `batchLength` below 49 is still an error.
pub fn split_batches_lenient(buf: &[u8]) -> Batches<'_> {
    Batches {
        rest: buf,
        lenient: true,
        finished: false,
    }
}
