//! Where the guard's kernel state outlives the agent: the XDP and TC bpf_links and the maps,
//! pinned on a bpf filesystem under `{root}/v{PIN_LAYOUT_VERSION}/{interface}/`.
//!
//! Why pin: a bpf_link held only by a process is detached when that process dies, SIGKILL
//! included, and the ownership lease in the map goes with it: the address stays on the
//! interface, unguarded (issue #13). A pinned link keeps the program attached and the lease
//! running, so a dead or frozen agent's node stops answering for the address by itself when
//! the lease runs out, and a restarted agent takes over the same maps and links (it swaps its
//! own program into the pinned link with `bpf_link_update`, atomically) instead of leaving a
//! gap. Pinning the maps alone would not keep an attachment; a netlink-attached XDP program
//! cannot be pinned at all, so when pinning is asked for, that fallback is an error.
//!
//! Why versioned: aya reuses a pinned map by name without comparing its layout. A build whose
//! maps differ (another `PIN_LAYOUT_VERSION`) pins elsewhere and first removes the other
//! versions' pins of the interface (their link detaches: an XDP hook has room for one link).
//! Within a version, pinned maps whose sizes differ from this build's (a changed
//! `max_tracked_connections`, a forgotten version bump) are dropped as well. Either way the
//! guard then starts from empty maps, every address fenced, as on a first start.
//!
//! Removing the directory (`rm -r`) detaches everything once no agent holds it: the way to
//! take tdsvip off a node.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use tdsvip_ebpf_common::PIN_LAYOUT_VERSION;

use crate::guard::GuardError;

/// `statfs(2)` type of a bpf filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Pin name of the XDP link.
pub(crate) const LINK_XDP: &str = "link_xdp_vip_guard";
/// Pin names of the TC links.
pub(crate) const LINK_TC_INGRESS: &str = "link_tc_ingress_conn_track";
pub(crate) const LINK_TC_EGRESS: &str = "link_tc_egress_conn_track";

/// A pinned map as this build creates it: name, key size, value size, capacity.
pub(crate) struct MapLayout {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// One interface's pin directory, created and cleared of other layouts' pins.
#[derive(Debug, Clone)]
pub struct PinDir {
    dir: PathBuf,
}

impl PinDir {
    /// `{root}/v{PIN_LAYOUT_VERSION}/{interface}`, after checking that `root` is on bpffs (it
    /// is created if missing) and removing the interface's pins under other versions.
    pub fn open(root: &Path, interface: &str) -> Result<PinDir, GuardError> {
        fs::create_dir_all(root).map_err(|err| pin_error(root, &err))?;
        if !is_bpffs(root).map_err(|err| pin_error(root, &err))? {
            return Err(GuardError::Pin(format!(
                "{} is not on a bpf filesystem, so nothing pinned there could outlive the agent (mount one: mount -t bpf bpf {0})",
                root.display()
            )));
        }
        remove_other_versions(root, interface)?;
        let dir = root.join(format!("v{PIN_LAYOUT_VERSION}")).join(interface);
        fs::create_dir_all(&dir).map_err(|err| pin_error(&dir, &err))?;
        Ok(PinDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Removes every pin here when one of the pinned maps is not laid out as `expected`;
    /// whether it did.
    pub(crate) fn drop_if_mismatched(&self, expected: &[MapLayout]) -> Result<bool, GuardError> {
        let mismatch = expected.iter().find_map(|layout| {
            let path = self.map_path(layout.name);
            let info = aya::maps::MapInfo::from_pin(&path).ok()?;
            let found = (info.key_size(), info.value_size(), info.max_entries());
            let want = (layout.key_size, layout.value_size, layout.max_entries);
            (found != want).then(|| format!("{}: {found:?} pinned, {want:?} wanted", layout.name))
        });
        let Some(mismatch) = mismatch else {
            return Ok(false);
        };
        tracing::warn!(dir = %self.dir.display(), %mismatch, "pinned maps differ from this build's (key size, value size, capacity): starting from empty maps, every address fenced");
        self.clear()?;
        Ok(true)
    }

    /// The link pinned under `name`, if any. A pin that is not a link is removed.
    pub(crate) fn existing_link(&self, name: &str) -> Option<FdLink> {
        let path = self.dir.join(name);
        if !path.exists() {
            return None;
        }
        match PinnedLink::from_pin(&path) {
            Ok(pinned) => Some(pinned.into()),
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "not a pinned link: removing it");
                self.remove(name);
                None
            }
        }
    }

    /// Pins `link` under `name`; the pin, not this process, keeps it attached from now on.
    pub(crate) fn pin_link(&self, name: &str, link: FdLink) -> Result<(), GuardError> {
        let path = self.dir.join(name);
        link.pin(&path)
            .map_err(|err| GuardError::Pin(format!("pinning {}: {err}", path.display())))?;
        Ok(())
    }

    /// Unpins `name` (a link pinned there detaches once no process holds it).
    pub(crate) fn remove(&self, name: &str) {
        let path = self.dir.join(name);
        if let Err(err) = fs::remove_file(&path)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), %err, "cannot unpin");
        }
    }

    fn clear(&self) -> Result<(), GuardError> {
        let entries = fs::read_dir(&self.dir).map_err(|err| pin_error(&self.dir, &err))?;
        for entry in entries.flatten() {
            fs::remove_file(entry.path()).map_err(|err| pin_error(&entry.path(), &err))?;
        }
        Ok(())
    }
}

/// Removes `{root}/v*/{interface}` for every version but this build's.
fn remove_other_versions(root: &Path, interface: &str) -> Result<(), GuardError> {
    let ours = format!("v{PIN_LAYOUT_VERSION}");
    let Ok(entries) = fs::read_dir(root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Only `v<digits>`: the root may be shared (`/sys/fs/bpf` itself) with others' pins.
        let versioned = name
            .strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !versioned || name == ours {
            continue;
        }
        let stale = entry.path().join(interface);
        if stale.is_dir() {
            tracing::warn!(dir = %stale.display(), "removing another build's pinned guard (another map layout) before attaching this one");
            fs::remove_dir_all(&stale).map_err(|err| pin_error(&stale, &err))?;
        }
    }
    Ok(())
}

fn pin_error(path: &Path, err: &io::Error) -> GuardError {
    GuardError::Pin(format!("{}: {err}", path.display()))
}

/// Whether `path` (which must exist) lies on a bpf filesystem.
fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points to writable memory
    // of the size statfs(2) fills; it is read only after the call reported success.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it initialised the whole struct.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_type == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_off_bpffs_is_refused_with_the_mount_command() {
        let dir = std::env::temp_dir();
        let err = PinDir::open(&dir, "eth0").unwrap_err().to_string();
        assert!(err.contains("is not on a bpf filesystem"), "{err}");
        assert!(err.contains("mount -t bpf bpf"), "{err}");
    }

    #[test]
    fn a_root_that_cannot_be_created_is_an_error_naming_it() {
        // Under a regular file: cannot be created, even by root.
        let err = PinDir::open(Path::new("/proc/version/tdsvip-pins"), "eth0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/version/tdsvip-pins"), "{err}");
    }
}
