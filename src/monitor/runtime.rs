//! The only code that calls libcontainer. Each function runs inside a helper child (see
//! `helper.rs`), never in the monitor itself and never in the daemon.

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use std::path::Path;

use super::stdio::ChildStdio;

/// libcontainer's Display often says only "io error"; the Debug form names the cause.
fn describe(e: &LibcontainerError) -> String {
    format!("{e}: {e:?}")
}

/// What libcontainer says when its cleanup of a failed create cannot remove the decoy cgroup
/// tree (see `own_cgroup`): the error's cleanup part and the error event it logs.
const CLEANUP_PART: &str = ". error during cleanup: ";
pub const DECOY_CLEANUP_NOISE: &[&str] = &["failed to remove cgroup manager"];

/// [`describe`] without the cleanup part, for a create whose cgroup libcontainer never saw.
fn describe_without_cleanup(e: &LibcontainerError) -> String {
    let text = e.to_string();
    match text.split_once(CLEANUP_PART) {
        Some((run, _)) => run.to_owned(),
        None => describe(e),
    }
}

/// A builder for container `id` whose process gets `stdio`: three descriptors, or a pty through
/// the console socket (the pty then becomes fds 0, 1 and 2; libcontainer ignores the others).
fn builder_with_stdio(
    id: &str,
    runtime_root: &Path,
    stdio: ChildStdio,
) -> Result<ContainerBuilder, LibcontainerError> {
    let builder = ContainerBuilder::new(id.to_owned(), SyscallType::Linux)
        .with_root_path(runtime_root)
        .and_then(ContainerBuilder::validate_id)?;
    Ok(match stdio {
        ChildStdio::Fds(fds) => builder
            .with_stdin(fds.stdin)
            .with_stdout(fds.stdout)
            .with_stderr(fds.stderr),
        ChildStdio::Console(socket) => builder.with_console_socket(Some(socket)),
    })
}

/// Creates the container (init waits for `start`, or is started at once with `start`) and
/// returns init's pid. init is cloned as this process's child (not as a sibling), so it is
/// handed to the monitor when we exit. A container that cannot be started is left created:
/// the caller's cleanup deletes it as any failed create. `decoy`: libcontainer sees only the
/// decoy cgroup tree, so what its cleanup says of the cgroup is left out.
pub fn create(
    id: &str,
    bundle: &Path,
    runtime_root: &Path,
    stdio: ChildStdio,
    start: bool,
    decoy: bool,
) -> Result<i32, String> {
    // libcontainer reports a missing or unreadable spec without its path.
    let spec = bundle.join("config.json");
    if let Err(e) = std::fs::metadata(&spec) {
        return Err(format!("bundle spec {}: {e}", spec.display()));
    }
    let builder = builder_with_stdio(id, runtime_root, stdio).map_err(|e| describe(&e))?;
    let mut container = builder
        .as_init(bundle)
        // libcgroups takes the systemd manager only for a `slice:prefix:name` cgroupsPath (the
        // systemd driver's specs, see cgroup_driver::spec_path); absolute paths keep cgroupfs.
        // The choice is kept in libcontainer's state, so kill, delete and exec follow it.
        .with_systemd(true)
        // Detached: the container's stdio is what we pass, never this process's terminal.
        .with_detach(true)
        .build()
        .map_err(|e| match decoy {
            true => describe_without_cleanup(&e),
            false => describe(&e),
        })?;
    let pid = container
        .pid()
        .map(|p| p.as_raw())
        .ok_or_else(|| "libcontainer created the container but recorded no init pid".to_owned())?;
    if start {
        container
            .start()
            .map_err(|e| format!("start: {}", describe(&e)))?;
    }
    Ok(pid)
}

/// Lets the created container's init exec the user process.
pub fn start(id: &str, runtime_root: &Path) -> Result<(), String> {
    let mut container = Container::load(runtime_root.join(id))
        .map_err(|e| format!("load state: {}", describe(&e)))?;
    container.start().map_err(|e| describe(&e))
}

/// Deletes the container: kills what is left in its cgroup, removes the cgroup and the
/// libcontainer state directory. Succeeds if there is nothing to delete.
pub fn delete(id: &str, runtime_root: &Path) -> Result<(), String> {
    let dir = runtime_root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    match Container::load(dir.clone()) {
        Ok(mut container) => container.delete(true).map_err(|e| describe(&e)),
        // A directory without a state file is one libcontainer did not finish creating; it
        // has made nothing else yet (the cgroup comes later), so the directory is all there is.
        Err(_) if !dir.join("state.json").exists() => crate::util::remove_dir_all_if_exists(&dir)
            .map_err(|e| format!("remove {}: {e}", dir.display())),
        Err(e) => Err(format!("load state: {}", describe(&e))),
    }
}

/// How an exec into a running container failed.
pub enum ExecError {
    /// The container is not running (never started, exited, or deleted).
    NotRunning(String),
    /// The command is not there (shell convention: exit code 127).
    NotFound(String),
    /// The command is there but cannot be executed (exit code 126).
    NotExecutable(String),
    Failed(String),
}

/// Markers our executor's validation puts in front of its message. The message crosses
/// libcontainer's init channel as text only, so this is how the kind survives the trip.
const NOT_FOUND_MARK: &str = "[exec:not-found] ";
const NOT_EXECUTABLE_MARK: &str = "[exec:not-executable] ";

impl ExecError {
    /// Sorts a failed build by the marker our validation left in the message.
    fn from_build(text: String) -> ExecError {
        let strip = |mark: &str| {
            text.split_once(mark).map(|(_, rest)| {
                rest.split(['"', ':'])
                    .next()
                    .unwrap_or(rest)
                    .trim()
                    .to_owned()
            })
        };
        if let Some(msg) = strip(NOT_FOUND_MARK) {
            ExecError::NotFound(msg)
        } else if let Some(msg) = strip(NOT_EXECUTABLE_MARK) {
            ExecError::NotExecutable(msg)
        } else {
            ExecError::Failed(text)
        }
    }
}

/// Starts `process` (a process.json, usually `/proc/self/fd/N`) inside the running container
/// and returns its pid: a child of this process, so the caller reaps it.
pub fn exec(
    id: &str,
    runtime_root: &Path,
    process: &Path,
    stdio: ChildStdio,
) -> Result<i32, ExecError> {
    let state = runtime_root.join(id).join("state.json");
    if !state.exists() {
        return Err(ExecError::NotRunning(format!(
            "container {id} has no state in {} (exited and deleted, or never created)",
            runtime_root.display()
        )));
    }
    let builder =
        builder_with_stdio(id, runtime_root, stdio).map_err(|e| ExecError::Failed(describe(&e)))?;
    let seccomp = container_seccomp(id, runtime_root)?;
    builder
        .with_executor(SeccompExecutor { seccomp })
        .as_tenant()
        .with_process(Some(process))
        // Detached only matters with a tty: it makes libcontainer use the console socket.
        .with_detach(true)
        .build()
        .map(|pid| pid.as_raw())
        .map_err(|e| match e {
            LibcontainerError::IncorrectStatus(status) => {
                ExecError::NotRunning(format!("container {id} is {status:?}, not running"))
            }
            other => ExecError::from_build(describe(&other)),
        })
}

/// The seccomp profile the container was created with (from its bundle's config.json).
fn container_seccomp(
    id: &str,
    runtime_root: &Path,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, ExecError> {
    let container =
        Container::load(runtime_root.join(id)).map_err(|e| ExecError::Failed(describe(&e)))?;
    let config = container.bundle().join("config.json");
    let spec = oci_spec::runtime::Spec::load(&config)
        .map_err(|e| ExecError::Failed(format!("reading {}: {e}", config.display())))?;
    Ok(spec.linux().as_ref().and_then(|l| l.seccomp().clone()))
}

/// Runs an exec'd process under the container's seccomp filter. libcontainer 0.7's tenant
/// builder drops `linux.seccomp` from the spec it gives the new process, so without this a
/// `kubectl exec` would escape the container's profile. The filter is loaded here, in the new
/// process right before execve, after libcontainer has dropped its capabilities: the kernel
/// then requires no_new_privs, so exec'd processes always run with it set.
#[derive(Clone)]
struct SeccompExecutor {
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

impl libcontainer::workload::Executor for SeccompExecutor {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError;
        if let Some(profile) = &self.seccomp {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(ExecutorError::Other(format!(
                    "PR_SET_NO_NEW_PRIVS: {}",
                    std::io::Error::last_os_error()
                )));
            }
            libcontainer::seccomp::initialize_seccomp(profile).map_err(|e| {
                ExecutorError::Other(format!("loading the container's seccomp profile: {e:?}"))
            })?;
        }
        let err = match (libcontainer::workload::default::DefaultExecutor {}).exec(spec) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // execve failed after validation passed (a script whose interpreter is missing, a
        // binary for another architecture, a race with the file): end as a shell would,
        // with the reason on stderr, instead of libcontainer's generic failure.
        // The errno is only in the message (libcontainer formats it there).
        let text = format!("{err:?}");
        let code = if text.contains("ENOENT") || text.contains("ENOTDIR") {
            127
        } else {
            126
        };
        eprintln!("crius: exec failed: {text}");
        // SAFETY: _exit ends this (forked, single-threaded) process without running anything
        // of the parent's.
        unsafe { libc::_exit(code) }
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        use libcontainer::workload::ExecutorValidationError as E;
        match (libcontainer::workload::default::DefaultExecutor {}).validate(spec) {
            Err(E::ArgValidationError(msg)) if msg.contains("not found in $PATH") => {
                Err(E::ArgValidationError(format!("{NOT_FOUND_MARK}{msg}")))
            }
            Err(E::ArgValidationError(msg))
                if msg.contains("does not have correct permissions") =>
            {
                Err(E::ArgValidationError(format!("{NOT_EXECUTABLE_MARK}{msg}")))
            }
            other => other,
        }
    }
}
