//! [`Code`] and [`LogLevel`]: the error kinds and log severities of every plugbay contract
//! (C ABI, gRPC, WIT), each with its one mapping to the C numbers of `include/plugbay.h`.
//! The C status numbers were chosen equal to gRPC's, so [`Code::grpc`] is [`Code::status`]
//! and a status crosses every contract unchanged.

use core::fmt;

use crate::{
    LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_TRACE, LOG_WARN, STATUS_DEADLINE_EXCEEDED,
    STATUS_FAILED_PRECONDITION, STATUS_INTERNAL, STATUS_INVALID_ARGUMENT, STATUS_NOT_FOUND,
    STATUS_PERMISSION_DENIED, STATUS_RESOURCE_EXHAUSTED, STATUS_UNAVAILABLE, Status,
};

/// The kind of failure. The set and the numbers are gRPC's, so the network APIs map them
/// one to one, and the C ABI uses the same numbers as status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Code {
    /// The request or an input file is malformed; retrying the same thing fails again.
    InvalidArgument,
    /// The deadline passed before the operation finished.
    DeadlineExceeded,
    /// No plugin, capability or method by that name.
    NotFound,
    /// The operation is not allowed (method not whitelisted, path escapes the plugin folder).
    PermissionDenied,
    /// A limit was hit (payload size, call depth, queue full).
    ResourceExhausted,
    /// The system is not in a state for this (wrong ABI, illegal lifecycle transition).
    FailedPrecondition,
    /// A bug or an unexpected failure, in the host or in a plugin.
    Internal,
    /// Temporarily unable to serve (plugin stopping, stopped, or not loaded).
    Unavailable,
}

impl Code {
    /// Every code, in number order.
    pub const ALL: [Code; 8] = [
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Internal,
        Code::Unavailable,
    ];

    /// The lower-case name used in messages and JSON (`invalid_argument`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        }
    }

    /// The C ABI's status number (`PLUGBAY_INVALID_ARGUMENT`, ...; [`crate::STATUS_INTERNAL`] and
    /// the other `STATUS_*` constants).
    pub const fn status(self) -> Status {
        match self {
            Code::InvalidArgument => STATUS_INVALID_ARGUMENT,
            Code::DeadlineExceeded => STATUS_DEADLINE_EXCEEDED,
            Code::NotFound => STATUS_NOT_FOUND,
            Code::PermissionDenied => STATUS_PERMISSION_DENIED,
            Code::ResourceExhausted => STATUS_RESOURCE_EXHAUSTED,
            Code::FailedPrecondition => STATUS_FAILED_PRECONDITION,
            Code::Internal => STATUS_INTERNAL,
            Code::Unavailable => STATUS_UNAVAILABLE,
        }
    }

    /// The code of a C status number; `None` for `STATUS_OK` and numbers plugbay does not
    /// use.
    pub fn from_status(status: Status) -> Option<Code> {
        Code::ALL.into_iter().find(|code| code.status() == status)
    }

    /// The gRPC status number: the C status number, since the C ABI took gRPC's numbering.
    pub const fn grpc(self) -> i32 {
        self.status()
    }

    /// The code of a gRPC status number; `None` for 0 (OK) and numbers plugbay does not use.
    pub fn from_grpc(number: i32) -> Option<Code> {
        Code::from_status(number)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity of a plugin's log line, most severe first (so `Error < Trace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for debugging.
    Debug,
    /// Very fine detail.
    Trace,
}

impl LogLevel {
    /// Every level, most severe first.
    pub const ALL: [LogLevel; 5] =
        [LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug, LogLevel::Trace];

    /// The C ABI's number for the level (`PLUGBAY_LOG_*`).
    pub const fn raw(self) -> i32 {
        match self {
            LogLevel::Error => LOG_ERROR,
            LogLevel::Warn => LOG_WARN,
            LogLevel::Info => LOG_INFO,
            LogLevel::Debug => LOG_DEBUG,
            LogLevel::Trace => LOG_TRACE,
        }
    }

    /// The level of a C number; a number the header does not define is
    /// [`LogLevel::Trace`] (the line is kept, at the lowest severity).
    pub fn from_raw(raw: i32) -> LogLevel {
        LogLevel::ALL.into_iter().find(|level| level.raw() == raw).unwrap_or(LogLevel::Trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_numbers_round_trip_and_are_grpcs() {
        let grpc = [3, 4, 5, 7, 8, 9, 13, 14];
        for (code, number) in Code::ALL.into_iter().zip(grpc) {
            assert_eq!(code.status(), number, "{code}");
            assert_eq!(code.grpc(), number, "{code}");
            assert_eq!(Code::from_status(code.status()), Some(code));
            assert_eq!(Code::from_grpc(number), Some(code));
        }
        assert_eq!(Code::from_status(crate::STATUS_OK), None);
        assert_eq!(Code::from_grpc(99), None);
    }

    #[test]
    fn log_levels_round_trip_and_out_of_range_numbers_are_kept() {
        for level in LogLevel::ALL {
            assert_eq!(LogLevel::from_raw(level.raw()), level);
        }
        assert_eq!(LogLevel::from_raw(99), LogLevel::Trace);
        assert_eq!(LogLevel::from_raw(0), LogLevel::Trace);
        assert!(LogLevel::Error < LogLevel::Trace);
    }
}
