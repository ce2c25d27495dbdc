//! The client's error type: what went wrong, with the topic/partition or address it concerns.

use std::fmt;

use runnel_codec::CodecError;

/// Result alias of the client library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a client call can fail with.
///
/// It is `Clone` because one failed batch fails the delivery futures of all its records.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker answered with a gRPC status.
    #[error("{}", fmt_status(context, status))]
    Rpc {
        /// What the client was doing, e.g. "produce to `orders`/3"; empty when the broker's
        /// message says it all.
        context: String,
        /// The broker's status (code and message).
        status: tonic::Status,
    },
    /// No connection to a broker could be made (or it broke).
    #[error("cannot reach broker at {address}: {message} (UNAVAILABLE)")]
    Transport {
        /// The `host:port` that was tried.
        address: String,
        /// What the transport reported.
        message: String,
    },
    /// A record batch could not be built or decoded.
    #[error("{context}: {source}")]
    Codec {
        /// Which batch: topic, partition and offset.
        context: String,
        /// The codec's error.
        source: CodecError,
    },
    /// A configuration value is invalid; the message names the key.
    #[error("{0}")]
    Config(String),
    /// The topic is not in the cluster's metadata.
    #[error("topic `{0}` does not exist (NOT_FOUND)")]
    UnknownTopic(String),
    /// The partition is outside the topic's partitions.
    #[error(
        "topic `{topic}` has {partitions} partitions, asked for partition {partition} (NOT_FOUND)"
    )]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        partitions: usize,
    },
    /// A fetch asked for an offset outside the partition's log.
    #[error(
        "offset {offset} is out of range for `{topic}`/{partition}: the log holds offsets \
         {log_start_offset}..{high_watermark} (OUT_OF_RANGE)"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset asked for.
        offset: i64,
        /// The first offset in the log.
        log_start_offset: i64,
        /// The high watermark (one past the last visible offset).
        high_watermark: i64,
    },
    /// A record was not acknowledged within the delivery timeout.
    #[error("{context}: not delivered within {timeout_ms} ms; last error: {last_error}")]
    DeliveryTimeout {
        /// Topic and partition.
        context: String,
        /// The configured delivery timeout.
        timeout_ms: u64,
        /// The last retriable error seen.
        last_error: String,
    },
    /// The producer was closed before the record was delivered.
    #[error("the producer is closed")]
    Closed,
    /// The broker answered something the client did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The gRPC code of a broker error, if this is one (transport errors count as
    /// `UNAVAILABLE`).
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            Error::Transport { .. } => Some(tonic::Code::Unavailable),
            Error::UnknownTopic(_) | Error::UnknownPartition { .. } => Some(tonic::Code::NotFound),
            Error::OffsetOutOfRange { .. } => Some(tonic::Code::OutOfRange),
            _ => None,
        }
    }

    /// A broker status with what the client was doing.
    pub(crate) fn rpc(context: impl Into<String>, status: tonic::Status) -> Self {
        Error::Rpc {
            context: context.into(),
            status,
        }
    }

    /// Whether retrying (after a metadata refresh and a backoff) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Rpc { status, .. } => is_retriable_code(status.code()),
            _ => false,
        }
    }
}

/// The gRPC codes worth a retry: the broker is going away, not (or no longer) the leader, or
/// does not know the partition yet (metadata still propagating).
pub(crate) fn is_retriable_code(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
    )
}

fn fmt_status(context: &str, status: &tonic::Status) -> String {
    let message = if status.message().is_empty() {
        "(no message)"
    } else {
        status.message()
    };
    if context.is_empty() {
        format!("{message} ({})", CodeName(status.code()))
    } else {
        format!("{context}: {message} ({})", CodeName(status.code()))
    }
}

/// A gRPC code spelled as the gRPC spec does (`NOT_FOUND`, `OUT_OF_RANGE`, …).
#[derive(Debug, Clone, Copy)]
pub struct CodeName(pub tonic::Code);

impl fmt::Display for CodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use tonic::Code::*;
        f.write_str(match self.0 {
            Ok => "OK",
            Cancelled => "CANCELLED",
            Unknown => "UNKNOWN",
            InvalidArgument => "INVALID_ARGUMENT",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            NotFound => "NOT_FOUND",
            AlreadyExists => "ALREADY_EXISTS",
            PermissionDenied => "PERMISSION_DENIED",
            ResourceExhausted => "RESOURCE_EXHAUSTED",
            FailedPrecondition => "FAILED_PRECONDITION",
            Aborted => "ABORTED",
            OutOfRange => "OUT_OF_RANGE",
            Unimplemented => "UNIMPLEMENTED",
            Internal => "INTERNAL",
            Unavailable => "UNAVAILABLE",
            DataLoss => "DATA_LOSS",
            Unauthenticated => "UNAUTHENTICATED",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_names_code_and_context() {
        let e = Error::rpc("", tonic::Status::not_found("topic `nope` does not exist"));
        assert_eq!(e.to_string(), "topic `nope` does not exist (NOT_FOUND)");
        let e = Error::rpc(
            "produce to `orders`/3",
            tonic::Status::resource_exhausted("batch of 2000000 bytes exceeds 1048576"),
        );
        assert_eq!(
            e.to_string(),
            "produce to `orders`/3: batch of 2000000 bytes exceeds 1048576 (RESOURCE_EXHAUSTED)"
        );
        assert_eq!(e.code(), Some(tonic::Code::ResourceExhausted));
        assert!(!e.is_retriable());
    }

    #[test]
    fn unknown_partition_message() {
        let e = Error::UnknownPartition {
            topic: "orders".into(),
            partition: 7,
            partitions: 3,
        };
        assert_eq!(
            e.to_string(),
            "topic `orders` has 3 partitions, asked for partition 7 (NOT_FOUND)"
        );
    }

    #[test]
    fn retriable_codes() {
        assert!(Error::rpc("x", tonic::Status::unavailable("bye")).is_retriable());
        assert!(!Error::rpc("x", tonic::Status::invalid_argument("bad")).is_retriable());
        assert!(!Error::rpc("x", tonic::Status::aborted("seq")).is_retriable());
        assert!(Error::Transport {
            address: "a".into(),
            message: "b".into()
        }
        .is_retriable());
    }
}
