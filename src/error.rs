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
    /// The node ran out of something it needs: disk space (ENOSPC), inodes, quota.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Something the node depends on cannot be reached now (a registry); retrying may help.
    #[error("{0}")]
    Unavailable(String),
    /// The node failed to do what was asked; the message carries the chain of causes.
    #[error("{0}")]
    Internal(String),
}

/// The text of an ENOSPC anywhere in a message, as std and nix print it; errors that crossed
/// a process boundary (the monitor's answers) arrive as text only.
const NO_SPACE: &str = "No space left on device";
const NO_QUOTA: &str = "Disk quota exceeded";
/// libcontainer's words when a container's or an exec's program is not in the image.
const NOT_IN_PATH: &str = "not found in $PATH";

/// Whether an error or any of its causes is the node running out of disk (ENOSPC, EDQUOT).
pub fn is_no_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        {
            return true;
        }
        if let Some(errno) = e.downcast_ref::<nix::errno::Errno>()
            && matches!(errno, nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// An error with its causes, "outer: inner: innermost": the one formatter of cause chains
/// (tonic's transport error alone says only "transport error"). A cause whose text the
/// message already holds (wrappers often repeat it) is said once.
pub fn cause_chain(err: &(dyn std::error::Error + '_)) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// The code a node-side failure deserves, from its message: Unknown unless it names a cause
/// the caller can act on.
fn classify(msg: &str) -> Code {
    if msg.contains(NO_SPACE) || msg.contains(NO_QUOTA) {
        Code::ResourceExhausted
    } else if msg.contains(NOT_IN_PATH) {
        // containerd and CRI-O pass runc's "executable file not found in $PATH" on as
        // Unknown; the program is a file the image does not have, which is NotFound.
        Code::NotFound
    } else {
        Code::Unknown
    }
}

impl CriError {
    /// An internal error with its context and the whole chain of causes (`{:#}`-style), since
    /// kubelet shows only this one string to the operator.
    pub fn internal(
        context: impl std::fmt::Display,
        err: impl std::error::Error + 'static,
    ) -> Self {
        let no_space = is_no_space(&err);
        let msg = format!("{context}: {}", cause_chain(&err));
        if no_space {
            return CriError::ResourceExhausted(msg);
        }
        CriError::Internal(msg)
    }

    /// The one mapping of a spec builder's refusal to a CRI error, by the code the SpecError
    /// itself says it deserves (the request's fault, a node feature it needs, or something
    /// crius does not implement); `context` (may be empty) prefixes the message.
    pub fn spec(context: &str, e: crate::oci::SpecError) -> Self {
        let msg = if context.is_empty() {
            e.to_string()
        } else {
            format!("{context}: {e}")
        };
        match e.grpc_code() {
            Code::Unimplemented => CriError::Unimplemented(msg),
            Code::FailedPrecondition => CriError::FailedPrecondition(msg),
            _ => CriError::InvalidArgument(msg),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            CriError::InvalidArgument(_) => Code::InvalidArgument,
            CriError::NotFound(_) => Code::NotFound,
            CriError::AlreadyExists(_) => Code::AlreadyExists,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::Unimplemented(_) => Code::Unimplemented,
            CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CriError::ResourceExhausted(_) => Code::ResourceExhausted,
            CriError::Unavailable(_) => Code::Unavailable,
            CriError::Internal(msg) => classify(msg),
        }
    }
}

impl From<CriError> for Status {
    fn from(e: CriError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// A status built elsewhere (image pulls) with Unknown gets the same classification.
pub fn refine(status: Status) -> Status {
    if status.code() != Code::Unknown {
        return status;
    }
    match classify(status.message()) {
        Code::Unknown => status,
        code => Status::new(code, status.message().to_string()),
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

    #[test]
    fn no_space_is_resource_exhausted_with_the_message_kept() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = CriError::internal("saving sandbox record", Outer(full));
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(
            e.to_string().starts_with("saving sandbox record: outer: "),
            "{e}"
        );
        let e = CriError::internal("mkdir", nix::errno::Errno::EDQUOT);
        assert_eq!(e.code(), Code::ResourceExhausted);
        // The monitor's answer carries only the text.
        let e = CriError::internal(
            "creating the container",
            std::io::Error::other("write exit.json: No space left on device (os error 28)"),
        );
        assert_eq!(Status::from(e).code(), Code::ResourceExhausted);
        let s = refine(Status::unknown(
            "unpack: No space left on device (os error 28)",
        ));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().starts_with("unpack: "));
    }

    #[test]
    fn missing_program_is_not_found_with_the_message_kept() {
        let e = CriError::internal(
            "creating the container",
            std::io::Error::other("executable 'nope' not found in $PATH"),
        );
        assert_eq!(e.code(), Code::NotFound);
        let status = Status::from(e);
        assert_eq!(
            status.message(),
            "creating the container: executable 'nope' not found in $PATH"
        );
        // Other failures stay Unknown, and other codes are left alone.
        assert_eq!(refine(Status::unknown("EBUSY")).code(), Code::Unknown);
        assert_eq!(
            refine(Status::not_found("No space left on device")).code(),
            Code::NotFound
        );
    }
}
