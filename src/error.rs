//! The error every CRI operation returns, and its one mapping to a gRPC status.
//!
//! Modules below the server keep their own `thiserror` enums; the services wrap them here with the
//! gRPC code that tells kubelet what went wrong (the caller's input, a missing object, a state
//! conflict, or the node).

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The request is malformed or asks for something the node refuses.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the object is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    /// The operation ran out of the time the caller gave it (ExecSync's timeout).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Something the node depends on cannot be reached now (a registry); retrying may help.
    #[error("{0}")]
    Unavailable(String),
    /// The node failed to do what was asked; the message carries the chain of causes.
    #[error("{0}")]
    Internal(String),
}

impl CriError {
    /// An internal error with its context and the whole chain of causes (`{:#}`-style), since
    /// kubelet shows only this one string to the operator.
    pub fn internal(context: impl std::fmt::Display, err: impl std::error::Error) -> Self {
        let mut msg = format!("{context}: {err}");
        let mut source = err.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !msg.contains(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            source = s.source();
        }
        CriError::Internal(msg)
    }

    pub fn code(&self) -> Code {
        match self {
            CriError::InvalidArgument(_) => Code::InvalidArgument,
            CriError::NotFound(_) => Code::NotFound,
            CriError::AlreadyExists(_) => Code::AlreadyExists,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::Unimplemented(_) => Code::Unimplemented,
            CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CriError::Unavailable(_) => Code::Unavailable,
            CriError::Internal(_) => Code::Unknown,
        }
    }
}

impl From<CriError> for Status {
    fn from(e: CriError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

pub type CriResult<T> = Result<T, CriError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn internal_keeps_the_cause_chain() {
        let e = CriError::internal("mounting rootfs", Outer(std::io::Error::other("EBUSY")));
        assert_eq!(e.to_string(), "mounting rootfs: outer: EBUSY");
        assert_eq!(Status::from(e).code(), Code::Unknown);
    }
}
