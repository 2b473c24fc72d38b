//! Pinned network namespaces: a pod's netns is kept alive by a bind mount of its nsfs file onto
//! a file of ours, so it outlives its processes and can be handed to CNI plugins. A pod's netns
//! is made before its sandbox container ([`create`]), so that CNI can wire it while the
//! container is being created.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::NetworkError;

/// Create a new network namespace with its loopback up and pin it at `path`. The work runs on
/// a thread of its own that exits afterwards (unshare(2) moves only the calling thread, which
/// must never go back to a pool carrying the pod's namespace); the caller awaits it without
/// holding a worker or a blocking-pool thread. On failure nothing is left.
pub async fn create(path: &Path) -> Result<(), NetworkError> {
    let owned = path.to_path_buf();
    let made = own_thread(path, "netns-create", move || create_here(&owned))?.await;
    made.unwrap_or_else(|_| Err(panicked(path, "netns-create")))
}

/// The body of [`create`], on its own thread.
fn create_here(path: &Path) -> Result<(), NetworkError> {
    placeholder(path)?;
    let result = nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetworkError::netns(path, "unshare", e))
        .and_then(|_| lo_up(path))
        .and_then(|_| bind(Path::new("/proc/thread-self/ns/net"), path));
    match &result {
        Ok(()) => tracing::debug!(path = %path.display(), "created network namespace"),
        Err(_) if !is_pinned(path) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
    result
}

/// Runs `work` on a new thread and waits for it (from a blocking thread): unshare(2) and
/// setns(2) move only the calling thread, which must never go back to a pool carrying a pod's
/// namespace.
fn on_own_thread<F>(path: &Path, name: &'static str, work: F) -> Result<(), NetworkError>
where
    F: FnOnce() -> Result<(), NetworkError> + Send + 'static,
{
    own_thread(path, name, work)?
        .blocking_recv()
        .unwrap_or_else(|_| Err(panicked(path, name)))
}

/// Starts `work` on a new thread; its result comes through the receiver (closed without one
/// if the thread panicked).
fn own_thread<F>(
    path: &Path,
    name: &'static str,
    work: F,
) -> Result<tokio::sync::oneshot::Receiver<Result<(), NetworkError>>, NetworkError>
where
    F: FnOnce() -> Result<(), NetworkError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| NetworkError::netns(path, "spawn a thread", e))?;
    Ok(rx)
}

fn panicked(path: &Path, name: &'static str) -> NetworkError {
    NetworkError::netns(path, name, io::Error::other("the worker thread panicked"))
}

/// The empty file a namespace is bind-mounted onto; refuses a path that already is a pin.
fn placeholder(path: &Path) -> Result<(), NetworkError> {
    if is_pinned(path) {
        return Err(NetworkError::netns(
            path,
            "pin",
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a namespace is already pinned there",
            ),
        ));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| NetworkError::netns(path, "create parent directory", e))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| NetworkError::netns(path, "create mount point", e))?;
    Ok(())
}

/// Bind-mount the nsfs file `source` onto the placeholder `path`.
fn bind(source: &Path, path: &Path) -> Result<(), NetworkError> {
    if let Err(errno) = nix::mount::mount(
        Some(source),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        // Whatever was at `path` is now an unmounted placeholder (or a stale one from a crash):
        // either way it is ours to remove.
        let _ = std::fs::remove_file(path);
        return Err(NetworkError::netns(path, "bind-mount the namespace", errno));
    }
    Ok(())
}

/// Unmount (lazily, so an open reference in a plugin does not block it) and remove a pinned
/// namespace. A path that is absent or not mounted is fine: this is called again on retries.
pub fn unpin(path: &Path) -> Result<(), NetworkError> {
    // A path may have been pinned more than once (stacked mounts after a racy retry); peel them
    // all, but bounded so a misbehaving mount table can not loop forever.
    for _ in 0..8 {
        if !is_pinned(path) {
            break;
        }
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(errno) => return Err(NetworkError::netns(path, "unmount", errno)),
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(NetworkError::netns(path, "remove", e))
        }
        _ => Ok(()),
    }
}

/// Whether `path` currently is a network (or other) namespace file, i.e. a live pin.
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Set IFF_UP on `lo` of the calling thread's network namespace (`path` names it in errors).
fn lo_up(path: &Path) -> Result<(), NetworkError> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| NetworkError::netns(path, "open a socket", e))?;

    // SAFETY: ifreq is plain old data; all-zero is a valid value for it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the socket is open and `req` is a properly sized ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(NetworkError::netns(
            path,
            "SIOCGIFFLAGS lo",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(NetworkError::netns(
            path,
            "SIOCSIFFLAGS lo",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The global addresses of `ifname` inside the pinned namespace at `path` (IPv4 first, as
/// the kernel lists them): what a pod really holds when the CNI result that would say so was
/// never received (a daemon killed during ADD). Read on a thread of its own, which joins the
/// namespace and exits afterwards.
pub fn addresses(path: &Path, ifname: &str) -> Result<Vec<std::net::IpAddr>, NetworkError> {
    let ns = std::fs::File::open(path).map_err(|e| NetworkError::netns(path, "open", e))?;
    let (owned, ifname) = (path.to_path_buf(), ifname.to_string());
    let found = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = found.clone();
    on_own_thread(path, "netns-addrs", move || {
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetworkError::netns(&owned, "setns", e))?;
        let addrs =
            nix::ifaddrs::getifaddrs().map_err(|e| NetworkError::netns(&owned, "getifaddrs", e))?;
        let mut ips = Vec::new();
        for a in addrs.filter(|a| a.interface_name == ifname) {
            let Some(addr) = a.address else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                std::net::IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                std::net::IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            // Link-local addresses are the kernel's, not the network's.
            let link_local = match ip {
                std::net::IpAddr::V4(v4) => v4.is_link_local(),
                std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
            };
            if !link_local {
                ips.push(ip);
            }
        }
        *out.lock().unwrap_or_else(|p| p.into_inner()) = ips;
        Ok(())
    })?;
    let mut ips = std::mem::take(&mut *found.lock().unwrap_or_else(|p| p.into_inner()));
    ips.sort_by_key(|ip| ip.is_ipv6());
    Ok(ips)
}
